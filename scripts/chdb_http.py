#!/usr/bin/env python3
"""ClickHouse HTTP interface on loopback, backed by chDB's in-process ClickHouse engine.

Why this exists: the machines this project targets have no Docker and Debian's
clickhouse-server is 18.16 (no DateTime64, Bool, JSON functions). PyPI's
`chdb-core` wheel carries a current ClickHouse engine (26.x) as a library, but
its own TCP/HTTP listeners are disabled and its C API is not exported for
non-Python callers. So this small front serves the part of ClickHouse's HTTP
protocol that the Rust `clickhouse` crate and our API use, and hands every
statement to the real engine:

  * `GET|POST /?query=...` / SQL in the body / multipart form (query + param_*),
  * `database`, `default_format`, `param_<name>` (server-side query parameters),
    any other URL parameter is applied as a ClickHouse setting for that request,
  * `INSERT ... FORMAT <fmt>` with the data in the (possibly chunked) body: the
    data is spooled to a temp file and inserted with `FROM INFILE`, so binary
    formats and huge batches work and the engine parses them natively,
  * errors answer HTTP 500 with ClickHouse's own `Code: N. DB::Exception: ...`
    text and the `X-ClickHouse-Exception-Code` header, as a server would,
  * `GET /ping` answers `Ok.`.

Storage, engines (MergeTree family, materialized views), insert deduplication,
SQL and formats are all ClickHouse's own; only the transport is ours.

Usage: chdb_http.py --path DATA_DIR [--host 127.0.0.1] [--port 8123]
                    [--port-file FILE] [--exit-on-stdin-eof]
Prints `READY <port>` on stdout once it accepts connections.
"""

import argparse
import email.parser
import email.policy
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb  # noqa: E402  (chdb-core wheel)

# URL parameters that are part of the HTTP protocol rather than settings.
PROTOCOL_PARAMS = {
    "query", "database", "default_format", "user", "password", "query_id",
    "session_id", "session_timeout", "session_check", "compress", "decompress",
    "wait_end_of_query", "buffer_size", "max_result_bytes", "quota_key",
    "role", "enable_http_compression", "http_zlib_compression_level",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
}

SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
INSERT_WITH_FORMAT = re.compile(
    r"^\s*(?P<head>INSERT\s+INTO\s+.*?)\s+FORMAT\s+(?P<fmt>[A-Za-z0-9_]+)\s*;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
SETTINGS_CLAUSE = re.compile(r"\s+SETTINGS\s+", re.IGNORECASE)
TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
ERROR_CODE = re.compile(r"Code:\s*(\d+)")

CONTENT_TYPES = {
    "json": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
}

DB_PATH = None
SPOOL_DIR = None


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class QueryError(Exception):
    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http"
    # Headers and body go out in separate writes; with Nagle's algorithm on,
    # the body waits for the client's delayed ACK (~40 ms per request).
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):  # keep stdout for the READY line only
        if os.environ.get("CHDB_HTTP_VERBOSE"):
            sys.stderr.write("chdb_http: " + (fmt % args) + "\n")

    # ---- request body -------------------------------------------------
    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise QueryError("truncated chunked body", 400)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailer section ends with an empty line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # ---- dispatch ------------------------------------------------------
    def do_GET(self):
        self.handle_request(b"")

    def do_POST(self):
        try:
            body = self.read_body()
        except QueryError as e:
            self.reply_error(str(e), e.status)
            return
        except Exception as e:  # malformed framing
            self.reply_error(f"Code: 400. DB::Exception: cannot read request body: {e}", 400)
            return
        self.handle_request(body)

    def handle_request(self, body: bytes):
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") in ("/ping",):
            self.reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
            return
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            form = parse_multipart(ctype, body)
            params.update(form)
            body = b""
        try:
            status, payload, out_format = run(params, body)
        except QueryError as e:
            self.reply_error(str(e), e.status)
            return
        except Exception as e:
            self.reply_error(str(e), 500)
            return
        self.reply(status, payload, CONTENT_TYPES.get(out_format.lower(), "text/plain; charset=UTF-8"),
                   {"X-ClickHouse-Format": out_format})

    def reply(self, status, payload: bytes, ctype, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-ClickHouse-Summary",
                         '{"read_rows":"0","read_bytes":"0","written_rows":"0","written_bytes":"0",'
                         '"total_rows_to_read":"0","result_rows":"0","result_bytes":"0","elapsed_ns":"0"}')
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def reply_error(self, message: str, status: int):
        if not message.startswith("Code:"):
            message = f"Code: 1001. DB::Exception: {message}"
        code = ERROR_CODE.search(message)
        payload = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-ClickHouse-Exception-Code", code.group(1) if code else "1001")
        self.end_headers()
        self.wfile.write(payload)


def parse_multipart(ctype: str, body: bytes) -> dict:
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    fields = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = part.get_payload(decode=True).decode("utf-8")
    return fields


def run(params: dict, body: bytes):
    """Execute one request; returns (status, payload bytes, output format)."""
    if params.get("decompress") == "1" or params.get("compress") == "1":
        raise QueryError("Code: 1002. DB::Exception: ClickHouse block compression is not supported by "
                         "this front; configure the client with compression = none", 400)
    query = params.get("query")
    data_file = None
    if query is not None and body:
        sql, data_file = insert_from_body(query, body)
    elif query is not None:
        sql = query
    else:
        sql = body.decode("utf-8")
    if not sql.strip():
        raise QueryError("Code: 62. DB::Exception: Empty query", 400)

    settings = []
    query_params = {}
    for key, value in params.items():
        if key.startswith("param_"):
            query_params[key[len("param_"):]] = value
        elif key not in PROTOCOL_PARAMS:
            if not SETTING_NAME.match(key):
                raise QueryError(f"Code: 115. DB::Exception: Unknown setting '{key}'", 400)
            settings.append((key, value))

    match = TRAILING_FORMAT.search(sql)
    out_format = match.group(1) if match else params.get("default_format", "TabSeparated")
    conn = chdb.connect(DB_PATH)
    try:
        database = params.get("database")
        if database:
            conn.query(f"USE `{database.replace('`', '')}`")
        for key, value in settings:
            conn.query(f"SET {key} = {quote_literal(value)}")
        result = conn.query(sql, out_format, params=query_params)
        payload = result.bytes() if hasattr(result, "bytes") else bytes(result)
        return 200, payload or b"", out_format
    except QueryError:
        raise
    except Exception as e:
        raise QueryError(str(e), 500)
    finally:
        conn.close()
        if data_file:
            try:
                os.unlink(data_file)
            except OSError:
                pass


def insert_from_body(query: str, body: bytes):
    """`INSERT INTO t (..) [SETTINGS ..] FORMAT F` + body → FROM INFILE on a spooled copy."""
    m = INSERT_WITH_FORMAT.match(query)
    if not m:
        # Not an INSERT: ClickHouse appends the body to the query text.
        return query + "\n" + body.decode("utf-8"), None
    head, fmt = m.group("head"), m.group("fmt")
    parts = SETTINGS_CLAUSE.split(head, maxsplit=1)
    target = parts[0]
    settings = (" SETTINGS " + parts[1]) if len(parts) > 1 else ""
    fd, path = tempfile.mkstemp(prefix="insert-", suffix=".data", dir=SPOOL_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    return f"{target} FROM INFILE {quote_literal(path)}{settings} FORMAT {fmt}", path


def exit_when_stdin_closes():
    # The engine that spawned us holds our stdin; EOF means it died (even kill -9).
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main():
    global DB_PATH, SPOOL_DIR
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True, help="data directory of the embedded ClickHouse")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the bound port here once ready")
    ap.add_argument("--exit-on-stdin-eof", action="store_true")
    args = ap.parse_args()

    data = os.path.abspath(args.path)
    os.makedirs(data, exist_ok=True)
    SPOOL_DIR = os.path.join(data, "_http_spool")
    os.makedirs(SPOOL_DIR, exist_ok=True)
    DB_PATH = "file:" + data
    # Keep one connection open for the process lifetime: the engine shuts down
    # when its last connection closes, and per-request connections come and go.
    keeper = chdb.connect(DB_PATH)
    keeper.query("SELECT 1")

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(port))
        os.replace(tmp, args.port_file)
    if args.exit_on_stdin_eof:
        threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(f"READY {port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        keeper.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        time.sleep(0.1)
        sys.exit(1)
