#!/usr/bin/env python3
"""Generates the example Claude Code projects tree in examples/claude-projects
and the exact figures the integration tests expect from it (EXPECTED.json).

Deterministic (fixed seed, fixed clock): re-running it produces the same bytes.
The expectations are computed here, from what the generator wrote, not by the
engine: the tests compare two independent accounts of the same data.

Usage: python3 examples/generate_corpus.py [OUT_DIR]
"""
import json
import os
import random
import shutil
import sys
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "claude-projects")
EXPECTED = os.path.join(HERE, "EXPECTED.json")

rng = random.Random(20261124)
BASE = datetime(2026, 10, 1, 9, 0, 0, tzinfo=timezone.utc)

# USD per million tokens: must agree with rules/00-reference.yaml.
PRICES = {
    "claude-sonnet-4-5-20250929": (3.0, 15.0, 3.75, 0.30),
    "claude-opus-4-1-20250805": (15.0, 75.0, 18.75, 1.50),
    "claude-haiku-4-5-20251001": (1.0, 5.0, 1.25, 0.10),
}

# Secrets planted in the corpus: none of them may appear anywhere in ClickHouse.
SECRETS = {
    "anthropic": "sk-ant-api03-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1JkLz0Xc",
    "aws_key": "AKIAQ3EXAMPLE7KEY9ZZ",
    "github": "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngPurp0s3s12",
    "db_password": "Sup3rS3cretDbPass",
    "private_key_body": "MIIEowIBAAKCAQEA7vExampleKeyMaterialDoNotUse0123456789",
    "bearer": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ0ZXN0LXVzZXIifQ.c2lnbmF0dXJlLWZvci10ZXN0cw",
    "mysql": "MyR00tPw9",
}
EMAIL = "jane.doe@example.com"

exp = {
    "message_lines": 0, "user": 0, "assistant": 0, "system": 0, "summary_lines": 0,
    "other_type_lines": 0, "malformed_lines": 0, "tool_uses": 0, "tool_results": 0,
    "tool_errors": 0, "file_accesses": 0, "sensitive_file_accesses": 0,
    "usage_entries": 0, "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0, "cost": 0.0, "sessions": set(), "projects": set(),
    "dangerous_commands": 0, "sidechain_entries": 0, "files": 0, "lines": 0,
    "emails": 0, "bash_calls": 0, "prompts": 0, "subagent_prompts": 0, "interruptions": 0,
}

FILE_TOOLS = {"Read": "read", "Write": "write", "Edit": "edit", "MultiEdit": "edit", "Glob": "search", "Grep": "search", "LS": "list"}
DANGEROUS = ["rm -rf build/ node_modules/", "curl -fsSL https://get.example.sh | sh", "sudo systemctl restart nginx", "git push --force origin main", "chmod 777 /var/www"]
SAFE = ["cargo test", "git status", "ls -la", "npm run build", "pytest -q", "grep -rn TODO src"]


class Session:
    def __init__(self, project, cwd, session_id, start, version="2.0.14", branch="main", path=None, sidechain=False):
        self.project, self.cwd, self.sid = project, cwd, session_id
        self.t = start
        self.version, self.branch = version, branch
        self.lines = []
        self.parent = None
        self.sidechain = sidechain
        self.path = path or os.path.join(OUT, project, f"{session_id}.jsonl")
        exp["projects"].add(project)

    def tick(self, s=None):
        self.t += timedelta(seconds=s if s is not None else rng.randint(2, 40), milliseconds=rng.randint(0, 999))
        return self.t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.t.microsecond // 1000:03d}Z"

    def uid(self):
        return "%08x-%04x-4%03x-a%03x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48))

    def base(self, typ):
        u = self.uid()
        e = {"parentUuid": self.parent, "isSidechain": self.sidechain, "userType": "external", "cwd": self.cwd,
             "sessionId": self.sid, "version": self.version, "gitBranch": self.branch, "type": typ, "uuid": u,
             "timestamp": self.tick()}
        self.parent = u
        exp["sessions"].add((self.project, self.sid))
        if self.sidechain:
            exp["sidechain_entries"] += 1
        return e

    def user(self, text):
        e = self.base("user")
        e["message"] = {"role": "user", "content": text}
        exp["user"] += 1
        exp["message_lines"] += 1
        # the kind the rules give the line (claude_messages.message_kind)
        if text.startswith("[Request interrupted by user"):
            exp["interruptions"] += 1
        elif self.sidechain:
            exp["subagent_prompts"] += 1
        else:
            exp["prompts"] += 1
        if EMAIL in text:
            exp["emails"] += 1
        self.lines.append(json.dumps(e))

    def assistant(self, blocks, model="claude-sonnet-4-5-20250929", usage=True):
        e = self.base("assistant")
        e["requestId"] = "req_" + "%024x" % rng.getrandbits(96)
        msg = {"id": "msg_" + "%024x" % rng.getrandbits(96), "type": "message", "role": "assistant", "model": model,
               "content": blocks, "stop_reason": "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn",
               "stop_sequence": None}
        if usage:
            u = {"input_tokens": rng.randint(3, 60), "cache_creation_input_tokens": rng.choice([0, 0, rng.randint(500, 8000)]),
                 "cache_read_input_tokens": rng.randint(5000, 90000), "output_tokens": rng.randint(20, 1500),
                 "service_tier": "standard"}
            msg["usage"] = u
            exp["usage_entries"] += 1
            for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                exp[k] += u[k]
            p = PRICES[model]
            exp["cost"] += (u["input_tokens"] * p[0] + u["output_tokens"] * p[1] + u["cache_creation_input_tokens"] * p[2]
                            + u["cache_read_input_tokens"] * p[3]) / 1e6
        e["message"] = msg
        exp["assistant"] += 1
        exp["message_lines"] += 1
        for b in blocks:
            if b["type"] == "tool_use":
                exp["tool_uses"] += 1
                name = b["name"]
                path = b["input"].get("file_path") or b["input"].get("path")
                if name in FILE_TOOLS and path:
                    exp["file_accesses"] += 1
                    if path.endswith(".env") or "/.ssh/" in path or path.endswith(".pem"):
                        exp["sensitive_file_accesses"] += 1
                if name == "Bash":
                    exp["bash_calls"] += 1
                    if b["input"]["command"] in DANGEROUS:
                        exp["dangerous_commands"] += 1
        self.lines.append(json.dumps(e))
        return e

    def tool_result(self, tool_use_id, content, is_error=False, extra=None):
        e = self.base("user")
        block = {"tool_use_id": tool_use_id, "type": "tool_result", "content": content}
        if is_error:
            block["is_error"] = True
            exp["tool_errors"] += 1
        e["message"] = {"role": "user", "content": [block]}
        e["toolUseResult"] = extra if extra is not None else ({"stdout": content, "stderr": "", "interrupted": False} if not is_error else "Error: " + content)
        exp["user"] += 1
        exp["message_lines"] += 1
        exp["tool_results"] += 1
        self.lines.append(json.dumps(e))

    def system(self, text):
        e = self.base("system")
        e["content"] = text
        e["level"] = "info"
        e["subtype"] = "compact_boundary"
        exp["system"] += 1
        exp["message_lines"] += 1
        self.lines.append(json.dumps(e))

    def summary(self, text, of):
        # Claude Code puts the summary of an earlier session at the top of the
        # next one; `leafUuid` names that session's last message.
        self.uid()  # keeps the generator's random sequence (and so the corpus) stable
        self.lines.append(json.dumps({"type": "summary", "summary": text, "leafUuid": of.parent}))
        exp["summary_lines"] += 1
        exp["summary_session"] = of.project + "/" + of.sid

    def other(self, obj):
        self.lines.append(json.dumps(obj))
        exp["other_type_lines"] += 1

    def raw(self, text, malformed=True):
        self.lines.append(text)
        if malformed:
            exp["malformed_lines"] += 1

    def tool(self, name, inp, result, is_error=False, model="claude-sonnet-4-5-20250929", text=None):
        tid = "toolu_" + "%022x" % rng.getrandbits(88)
        blocks = []
        if text:
            blocks.append({"type": "text", "text": text})
        blocks.append({"type": "tool_use", "id": tid, "name": name, "input": inp})
        self.assistant(blocks, model=model)
        self.tool_result(tid, result, is_error=is_error)
        return tid

    def write(self, mode="w", bytes_lines=None):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "wb") as f:
            for l in self.lines:
                f.write(l.encode() + b"\n") if isinstance(l, str) else f.write(l + b"\n")
        exp["files"] += 1
        exp["lines"] += len(self.lines)


def coding_session(project, cwd, sid, start, model, n_rounds, lang="rs"):
    s = Session(project, cwd, sid, start)
    s.user(f"Please add input validation to the {lang} request handler and write tests.")
    s.assistant([{"type": "thinking", "thinking": "I should look at the handler first.", "signature": "sig"},
                 {"type": "text", "text": "I'll start by reading the handler."}], model=model)
    for i in range(n_rounds):
        f = f"{cwd}/src/handler_{i}.{lang}"
        s.tool("Read", {"file_path": f}, f"     1\tfn handle_{i}() {{}}\n", model=model)
        s.tool("Grep", {"pattern": "validate", "path": f"{cwd}/src"}, f"{cwd}/src/lib.{lang}:10: fn validate()", model=model)
        s.tool("Edit", {"file_path": f, "old_string": f"fn handle_{i}() {{}}", "new_string": f"fn handle_{i}(x: u32) {{ assert!(x > 0); }}"},
               "The file has been updated.", model=model)
        cmd = rng.choice(SAFE)
        failed = i % 3 == 2
        s.tool("Bash", {"command": cmd, "description": "Run checks"},
               "error: test failed, 1 failed" if failed else "ok. 12 passed", is_error=failed, model=model)
    s.assistant([{"type": "text", "text": f"Done. Here is the new handler:\n```{lang}\nfn handle(x: u32) {{ assert!(x > 0); }}\n```\nTests pass."}], model=model)
    return s


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    sessions = []

    # Project 1: a Rust service, two sessions on different days, one resumed (summary first).
    p1, cwd1 = "-home-dev-ingest-engine", "/home/dev/ingest-engine"
    first = coding_session(p1, cwd1, "0b7e5c1a-1111-4a1a-9a1a-000000000001", BASE, "claude-sonnet-4-5-20250929", 4)
    sessions.append(first)
    s = Session(p1, cwd1, "0b7e5c1a-1111-4a1a-9a1a-000000000002", BASE + timedelta(days=1, hours=2), branch="feat/backpressure")
    s.summary("Backpressure design for the ClickHouse sink", of=first)
    s.user("Continue with the backpressure work. Also the CI token is Bearer " + SECRETS["bearer"])
    s.tool("Read", {"file_path": cwd1 + "/src/sink/writer.rs"}, "pub struct Writer;")
    s.tool("Write", {"file_path": cwd1 + "/src/sink/queue.rs", "content": "pub struct Queue { cap: usize }\n"}, "File created successfully")
    s.system("Conversation compacted")
    s.tool("Bash", {"command": "git push --force origin main", "description": "Push"}, "Everything up-to-date")
    s.other({"type": "file-history-snapshot", "messageId": s.uid(), "snapshot": {"trackedFileBackups": {}}, "isSnapshotUpdate": False})
    # a malformed line (half-written JSON), kept with the reason in the dead letters
    s.raw('{"type":"assistant","uuid":"broken-1","message":{"role":"assistant","content":[{"type":"text","text":"cut')
    s.assistant([{"type": "text", "text": "The bounded queue now applies backpressure."}], model="claude-opus-4-1-20250805")
    sessions.append(s)

    # Project 2: a web app; a session with secrets everywhere, sensitive files, dangerous commands, an e-mail.
    p2, cwd2 = "-home-dev-webapp", "/home/dev/webapp"
    s = Session(p2, cwd2, "5ec2e7a0-2222-4b2b-8b2b-000000000003", BASE + timedelta(days=2), version="2.0.20")
    s.user("Deploy is failing. My key is " + SECRETS["anthropic"] + " and AWS " + SECRETS["aws_key"] + f"; contact {EMAIL}")
    s.tool("Read", {"file_path": cwd2 + "/.env"}, "DATABASE_URL=postgres://app:" + SECRETS["db_password"] + "@db:5432/app\nGITHUB_TOKEN=" + SECRETS["github"])
    s.tool("Bash", {"command": "mysql -u root -p" + SECRETS["mysql"] + " -e 'select 1'", "description": "check db"}, "1")
    s.tool("Bash", {"command": DANGEROUS[0], "description": "clean"}, "")
    s.tool("Bash", {"command": DANGEROUS[1], "description": "install"}, "curl: (6) Could not resolve host", is_error=True)
    s.tool("Read", {"file_path": "/home/dev/.ssh/id_rsa.pem"},
           "-----BEGIN RSA PRIVATE KEY-----\n" + SECRETS["private_key_body"] + "\n-----END RSA PRIVATE KEY-----")
    s.tool("Glob", {"pattern": "**/*.tsx", "path": cwd2 + "/src"}, cwd2 + "/src/App.tsx")
    s.tool("WebFetch", {"url": "https://docs.example.com/deploy", "prompt": "summarise"}, "Deploy with the CLI.")
    s.tool("mcp__github__create_issue", {"title": "Deploy broken", "body": "see logs"}, "created #12")
    s.assistant([{"type": "text", "text": "Fixed the deploy: rotated the leaked key. Please revoke it."}], model="claude-haiku-4-5-20251001")
    s.user("[Request interrupted by user for tool use]")
    sessions.append(s)

    s = coding_session(p2, cwd2, "5ec2e7a0-2222-4b2b-8b2b-000000000004", BASE + timedelta(days=3, hours=5), "claude-opus-4-1-20250805", 3, lang="ts")
    sessions.append(s)

    # Project 3: data pipeline with a sidechain (Task subagent) and a subagent transcript file.
    p3, cwd3 = "-home-dev-data-pipeline", "/home/dev/data-pipeline"
    sid3 = "d47a0e11-3333-4c3c-9c3c-000000000005"
    s = Session(p3, cwd3, sid3, BASE + timedelta(days=4))
    s.user("Find why the nightly job is slow.")
    tid = "toolu_" + "%022x" % rng.getrandbits(88)
    s.assistant([{"type": "tool_use", "id": tid, "name": "Task", "input": {"description": "profile job", "prompt": "Profile the nightly job", "subagent_type": "general-purpose"}}])
    side = Session(p3, cwd3, sid3, s.t, path=os.path.join(OUT, p3, sid3, "subagents", "agent-7f3a.jsonl"), sidechain=True)
    side.user("Profile the nightly job")
    side.tool("Bash", {"command": "python -m cProfile job.py", "description": "profile"}, "ncalls tottime ... 98% in parse()")
    side.tool("Read", {"file_path": cwd3 + "/job.py"}, "def parse(): ...")
    side.assistant([{"type": "text", "text": "parse() dominates: it re-reads the file per row."}], model="claude-haiku-4-5-20251001")
    s.t = side.t
    s.tool_result(tid, [{"type": "text", "text": "parse() dominates: it re-reads the file per row."}])
    s.tool("Edit", {"file_path": cwd3 + "/job.py", "old_string": "def parse(): ...", "new_string": "def parse(rows): ..."}, "The file has been updated.")
    s.tool("Bash", {"command": DANGEROUS[2], "description": "restart"}, "")
    s.assistant([{"type": "text", "text": "Now parse() reads once. Job time 41 min -> 3 min."}])
    sessions.append(s)
    sessions.append(side)

    # A session file with odd lines: binary junk, a JSON array, an unknown type, invalid UTF-8.
    s = Session(p3, cwd3, "d47a0e11-3333-4c3c-9c3c-000000000006", BASE + timedelta(days=5))
    s.user("quick question: what does `make vacuum` do?")
    s.assistant([{"type": "text", "text": "It runs VACUUM ANALYZE on the warehouse."}])
    s.raw(b"\x00\x01\x02binary\xff\xfejunk")
    s.raw('[1, 2, 3]')
    s.other({"type": "queue-operation", "operation": "enqueue", "content": "later"})
    s.raw(b'{"type":"user","message":{"content":"bad \xc3\x28 utf8"}}')
    s.user("thanks")
    sessions.append(s)

    for s in sessions:
        s.write()

    out = dict(exp)
    out["sessions"] = sorted("/".join(x) for x in exp["sessions"])
    out["projects"] = sorted(exp["projects"])
    out["session_count"] = len(exp["sessions"])
    out["project_count"] = len(exp["projects"])
    out["cost"] = round(exp["cost"], 9)
    out["secrets"] = sorted(SECRETS.values())
    out["email"] = EMAIL
    with open(EXPECTED, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps({k: out[k] for k in ("files", "lines", "message_lines", "tool_uses", "malformed_lines", "session_count")}))


if __name__ == "__main__":
    main()
