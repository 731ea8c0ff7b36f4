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
  * errors answer with ClickHouse's own `Code: N. DB::Exception: ...` text and
    the `X-ClickHouse-Exception-Code` header, as a server would,
  * `GET /ping` answers `Ok.` (the only request served without credentials).

Security (see README, "Security model"): chDB runs every statement with full
rights (it can read and write any file the OS user can), so this front is the
access control:

  * every request must carry a user and key (`X-ClickHouse-User`/`-Key` headers
    or HTTP basic auth), compared in constant time; the keys come from the
    parent over stdin (one JSON line), never from argv or the environment;
  * a `reader` runs with `readonly=1` set here, server side; a `writer` may
    INSERT and run DDL;
  * for both, each statement is first parsed by ClickHouse itself
    (`formatQuerySingleLine`, which parses without executing): one statement
    only, of an allowed kind, with no `INTO OUTFILE` / `FROM INFILE` and no
    table function or table engine that reaches outside the data directory
    (file, url, s3, remote, executable, python, ... — everything not on a short
    allow-list).

Concurrency: each request runs on a connection of its own (chDB keeps USE and
SET per connection), at most ENGINE_SLOTS at once, so a dashboard's queries
overlap each other and the ingester's inserts. Connections are multiplexed by
one selector thread and served by a fixed pool of workers; when the queue in
front of them is full a new request is answered at once with 503 +
Retry-After instead of growing threads without bound.

Usage: chdb_http.py --path DATA_DIR --lock-file FILE (--listen-fd FD | --port PORT)
Reads the credentials line from stdin, prints `READY <port>` on stdout once it
serves, and exits when stdin closes (the parent died, even by kill -9).
"""

import argparse
import base64
import email.parser
import email.policy
import fcntl
import hmac
import json
import os
import queue
import re
import selectors
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler

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

# ---- the policy -----------------------------------------------------------
READ_KINDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}
WRITE_KINDS = READ_KINDS | {"INSERT", "CREATE", "ALTER", "DROP", "TRUNCATE", "OPTIMIZE", "RENAME", "EXCHANGE"}
# Table functions and engines that only touch the engine's own data (lower case).
SAFE_SOURCES = {
    "numbers", "numbers_mt", "zeros", "zeros_mt", "values", "null", "view", "merge",
    "generaterandom", "generateseries", "generate_series", "primes", "format",
    "memory", "log", "tinylog", "stripelog", "set", "join", "materializedview",
    "mergetree", "replacingmergetree", "aggregatingmergetree", "summingmergetree",
    "collapsingmergetree", "versionedcollapsingmergetree", "coalescingmergetree",
    "graphitemergetree",
}
# Scalar functions that read files or define storage outside the data dir.
ALWAYS_DENIED = {"file", "disk", "python", "filesystem"}
# One left-to-right pass over the canonical text (which has only '...' strings
# and `...` identifiers: heredocs and "..." are normalised by formatQuery).
QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`", re.DOTALL)
CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
ENGINE = re.compile(r"\bENGINE\s*=\s*([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE)
FILE_CLAUSE = re.compile(r"\b(INTO\s+OUTFILE|FROM\s+INFILE)\b", re.IGNORECASE)

DB_PATH = None
SPOOL_DIR = None
USERS = {}  # user -> {"key": str, "role": "reader"|"writer"}
DENIED = set(ALWAYS_DENIED)
ALLOWED = set()  # (statement, role) pairs check_statement has allowed
ALLOWED_MAX = 4096
# Statements running at once. chdb-core runs concurrent statements on separate
# connections (the GIL is released while ClickHouse works); every statement
# already uses all cores, so a few slots give overlap (a short query is not
# stuck behind a long one or an insert) without multiplying memory.
# CLAUDE_INGEST_ENGINE_SLOTS overrides (1 = one statement at a time).
ENGINE_SLOTS = threading.BoundedSemaphore(
    int(os.environ.get("CLAUDE_INGEST_ENGINE_SLOTS") or min(4, max(2, os.cpu_count() or 2))))
WORKERS = 8
QUEUE_MAX = 256  # ~1-2 s of queries at most; beyond that, 503 + Retry-After
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT_S = 120  # longer than clients keep idle connections (clickhouse crate: 2 s, hyper: 90 s)
FIRST_REQUEST_TIMEOUT_S = 10
IO_TIMEOUT_S = 30


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def escape_param(value: str) -> str:
    """A query parameter value in ClickHouse's escaped text form."""
    return (value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
            .replace("\r", "\\r"))


class QueryError(Exception):
    def __init__(self, message: str, status: int = 500):
        super().__init__(message)
        self.status = status


def denied(what: str) -> QueryError:
    return QueryError(f"Code: 497. DB::Exception: {what} is not allowed on the embedded engine. "
                      "(ACCESS_DENIED)", 403)


def load_denied_sources():
    """Every table function and table engine this chDB build has, minus the safe ones."""
    conn = chdb.connect(DB_PATH)
    try:
        names = conn.query("SELECT name FROM system.table_functions UNION ALL "
                           "SELECT name FROM system.table_engines", "TSV").bytes().decode()
    finally:
        conn.close()
    for name in names.split():
        if name.lower() not in SAFE_SOURCES:
            DENIED.add(name.lower())


def check_statement(conn, sql: str, role: str):
    """Parse `sql` with ClickHouse's own parser (no execution) and apply the
    policy. A statement already allowed for the role is not parsed again: the
    verdict depends on the text and the role only, and the writer sends the
    same few insert statements for every batch."""
    if (sql, role) in ALLOWED:
        return
    check_fresh(conn, sql, role)
    if len(ALLOWED) >= ALLOWED_MAX:
        ALLOWED.clear()
    ALLOWED.add((sql, role))


def check_fresh(conn, sql: str, role: str):
    try:
        canonical = conn.query("SELECT formatQuerySingleLine({q:String})", "TSVRaw",
                               params={"q": escape_param(sql)}).bytes().decode()
    except Exception as e:
        raise QueryError(str(e), 400)
    bare = QUOTED.sub(lambda m: "''" if m.group(0)[0] == "'" else "ident", canonical)
    words = bare.lstrip("( ").split(None, 2)
    kind = words[0].upper() if words else ""
    if kind not in (WRITE_KINDS if role == "writer" else READ_KINDS):
        raise denied(f"{kind or 'an empty'} statement for the {role}")
    if kind == "CREATE" and "DICTIONARY" in (w.upper() for w in words[1:]):
        raise denied("CREATE DICTIONARY")
    clause = FILE_CLAUSE.search(bare)
    if clause:
        raise denied(" ".join(clause.group(1).upper().split()))
    for name in CALL.findall(bare) + ENGINE.findall(bare):
        if name.lower() in DENIED:
            raise denied(f"`{name}`")


# ---- authentication ----------------------------------------------------------
def authenticate(headers, params):
    """The role of the request's credentials, or None."""
    user, key = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")
    auth = headers.get("Authorization", "")
    if user is None and auth.lower().startswith("basic "):
        try:
            user, _, key = base64.b64decode(auth[6:].strip()).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
    if user is None:
        user, key = params.get("user"), params.get("password")
    entry = USERS.get(user or "")
    # Compare even for unknown users, so timing does not tell names apart.
    expected = entry["key"] if entry else "x" * 64
    ok = hmac.compare_digest((key or "").encode(), expected.encode())
    return entry["role"] if ok and entry else None


class Handler(BaseHTTPRequestHandler):
    """One request per call of `serve_one` (connections are kept by the selector)."""

    protocol_version = "HTTP/1.1"
    server_version = "chdb-http"

    def __init__(self, conn):  # noqa: D107 — no socketserver machinery here
        self.conn = conn
        self.request = conn.sock
        self.client_address = ("127.0.0.1", 0)
        self.rfile, self.wfile = conn.rfile, conn.wfile
        self.close_connection = True

    def serve_one(self) -> bool:
        """Handle one request; True when the connection may be kept."""
        self.close_connection = True
        self.handle_one_request()
        self.wfile.flush()
        return not self.close_connection

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
        if self.conn.busy:
            self.reply_busy()
            return
        self.handle_request(b"")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if self.role(url) is None:
            return  # refused before reading (and buffering) a stranger's body
        if self.conn.busy:
            self.read_body()  # unread data would turn our answer into a reset
            self.reply_busy()
            return
        try:
            body = self.read_body()
        except QueryError as e:
            self.reply_error(str(e), e.status)
            return
        except Exception as e:  # malformed framing
            self.close_connection = True
            self.reply_error(f"Code: 400. DB::Exception: cannot read request body: {e}", 400)
            return
        self.handle_request(body)

    def role(self, url):
        """The caller's role, or None after answering 401 (and closing)."""
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        role = authenticate(self.headers, params)
        if role is None:
            self.close_connection = True
            self.reply_error("Code: 516. DB::Exception: Authentication failed: password is incorrect, "
                             "or there is no user with such name. (AUTHENTICATION_FAILED)", 401)
        return role

    def handle_request(self, body: bytes):
        url = urllib.parse.urlsplit(self.path)
        if url.path.rstrip("/") in ("/ping",):
            self.reply(200, b"Ok.\n", "text/plain; charset=UTF-8")
            return
        role = self.role(url)
        if role is None:
            return
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            form = parse_multipart(ctype, body)
            params.update(form)
            body = b""
        try:
            status, payload, out_format = run(params, body, role)
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

    def reply_busy(self):
        """503 + Retry-After: the workers' queue was full when this request came."""
        self.close_connection = True
        self.reply_error("Code: 202. DB::Exception: Too many simultaneous queries: the embedded "
                         "engine's queue is full, retry later. (TOO_MANY_SIMULTANEOUS_QUERIES)", 503,
                         {"Retry-After": "1"})

    def reply_error(self, message: str, status: int, extra=None):
        if not message.startswith("Code:"):
            message = f"Code: 1001. DB::Exception: {message}"
        code = ERROR_CODE.search(message)
        payload = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-ClickHouse-Exception-Code", code.group(1) if code else "1001")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
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


def split_params(params: dict, role: str):
    """URL parameters → (settings, query parameters)."""
    settings, query_params = [], {}
    for key, value in params.items():
        if key.startswith("param_"):
            query_params[key[len("param_"):]] = value
        elif key not in PROTOCOL_PARAMS:
            if not SETTING_NAME.match(key):
                raise QueryError(f"Code: 115. DB::Exception: Unknown setting '{key}'", 400)
            if key == "readonly" and role == "reader":
                continue  # the reader's readonly is ours to set
            settings.append((key, value))
    if role == "reader":
        settings.append(("readonly", "1"))  # last: no later SET can lift it
    return settings, query_params


def run(params: dict, body: bytes, role: str):
    """Execute one request; returns (status, payload bytes, output format)."""
    if params.get("decompress") == "1" or params.get("compress") == "1":
        raise QueryError("Code: 1002. DB::Exception: ClickHouse block compression is not supported by "
                         "this front; configure the client with compression = none", 400)
    query = params.get("query")
    if query is not None and body and INSERT_WITH_FORMAT.match(query):
        checked, sql, data = query, None, body
    else:
        sql = query + "\n" + body.decode("utf-8") if query is not None and body else (
            query if query is not None else body.decode("utf-8"))
        checked, data = sql, None
    if not checked.strip():
        raise QueryError("Code: 62. DB::Exception: Empty query", 400)
    settings, query_params = split_params(params, role)
    match = TRAILING_FORMAT.search(checked)
    out_format = match.group(1) if match else params.get("default_format", "TabSeparated")
    data_file = None
    try:
        if data is not None:
            # The insert's settings go into its own SETTINGS clause: each `SET`
            # is a statement of its own (~1 ms of CPU in chDB), and an insert
            # carries eight of them.
            sql, data_file = insert_from_body(query, data, settings)
            settings = []
        with ENGINE_SLOTS:
            payload = execute(checked, sql, out_format, settings, query_params,
                              params.get("database"), role)
        return 200, payload or b"", out_format
    finally:
        if data_file:
            try:
                os.unlink(data_file)
            except OSError:
                pass


def execute(checked: str, sql: str, out_format: str, settings, query_params, database, role) -> bytes:
    """Check `checked` (what the client sent), then run `sql` on a fresh connection."""
    conn = chdb.connect(DB_PATH)
    try:
        check_statement(conn, checked, role)
        if database:
            conn.query(f"USE `{database.replace('`', '')}`")
        for key, value in settings:
            conn.query(f"SET {key} = {quote_literal(value)}")
        result = conn.query(sql, out_format, params=query_params)
        return result.bytes() if hasattr(result, "bytes") else bytes(result)
    except QueryError:
        raise
    except Exception as e:
        raise QueryError(str(e), 500)
    finally:
        conn.close()


def insert_from_body(query: str, body: bytes, settings=()):
    """`INSERT INTO t (..) [SETTINGS ..] FORMAT F` + body → FROM INFILE on a
    spooled copy, with `settings` (checked names) added to its SETTINGS clause."""
    m = INSERT_WITH_FORMAT.match(query)
    head, fmt = m.group("head"), m.group("fmt")
    parts = SETTINGS_CLAUSE.split(head, maxsplit=1)
    target = parts[0]
    clause = [parts[1]] if len(parts) > 1 else []
    clause += [f"{key} = {quote_literal(value)}" for key, value in settings]
    settings = (" SETTINGS " + ", ".join(clause)) if clause else ""
    fd, path = tempfile.mkstemp(prefix="insert-", suffix=".data", dir=SPOOL_DIR)
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    return f"{target} FROM INFILE {quote_literal(path)}{settings} FORMAT {fmt}", path


# ---- the server ----------------------------------------------------------
class Conn:
    """A client connection between requests: its socket and buffered streams."""

    def __init__(self, sock):
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(IO_TIMEOUT_S)
        self.rfile = sock.makefile("rb")
        self.wfile = sock.makefile("wb")
        self.idle_since = time.monotonic()
        self.served = 0
        self.busy = False  # set when it is to be turned away with 503

    def buffered(self) -> bool:
        """Is there already another request's data read (pipelining)?"""
        try:
            self.sock.setblocking(False)
            return bool(self.rfile.peek(1))
        except (BlockingIOError, OSError, ValueError):
            return False
        finally:
            try:
                self.sock.settimeout(IO_TIMEOUT_S)
            except OSError:
                pass

    def close(self):
        for f in (self.rfile, self.wfile, self.sock):
            try:
                f.close()
            except OSError:
                pass


class Front:
    """Selector thread for accept + idle keep-alive; a fixed pool of workers."""

    def __init__(self, listener):
        self.listener = listener
        listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, None)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.back = queue.SimpleQueue()  # connections returned by workers
        self.work = queue.Queue(maxsize=QUEUE_MAX)
        # Turned-away requests are still read (an answer before the request
        # is a protocol error to clients), by one thread of their own.
        self.refuse = queue.Queue(maxsize=QUEUE_MAX)
        self.open = 0
        self.idle = {}  # socket -> Conn waiting for its next request
        self.lock = threading.Lock()
        for i in range(WORKERS):
            threading.Thread(target=self.worker, name=f"worker-{i}", daemon=True).start()
        threading.Thread(target=self.refuser, name="refuser", daemon=True).start()

    def serve_forever(self):
        idle = self.idle
        while True:
            for key, _ in self.sel.select(timeout=1.0):
                if key.fileobj is self.listener:
                    self.accept_all()
                elif key.fileobj is self.wake_r:
                    self.take_back(idle)
                else:
                    conn = key.data
                    self.sel.unregister(conn.sock)
                    idle.pop(conn.sock, None)
                    self.dispatch(conn)
            self.sweep(idle)

    def accept_all(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # BlockingIOError: none left; others: try on the next event
                break
            with self.lock:
                full = self.open >= MAX_CONNECTIONS
                if not full:
                    self.open += 1
            if full:
                sock.close()
                continue
            sock.setblocking(True)
            # To a worker only once it has sent something: a silent client
            # costs a file descriptor here, not a worker.
            self.back.put(Conn(sock))
        self.take_back(self.idle)

    def dispatch(self, conn):
        try:
            self.work.put_nowait(conn)
            return
        except queue.Full:
            conn.busy = True
        try:
            self.refuse.put_nowait(conn)
        except queue.Full:
            self.closed(conn)  # beyond both bounds: drop it

    def take_back(self, idle):
        try:
            while self.wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                conn = self.back.get_nowait()
            except queue.Empty:
                return
            conn.idle_since = time.monotonic()
            idle[conn.sock] = conn
            self.sel.register(conn.sock, selectors.EVENT_READ, conn)

    def sweep(self, idle):
        now = time.monotonic()
        for sock, conn in list(idle.items()):
            limit = IDLE_TIMEOUT_S if conn.served else FIRST_REQUEST_TIMEOUT_S
            if now - conn.idle_since > limit:
                self.sel.unregister(sock)
                del idle[sock]
                self.closed(conn)

    def closed(self, conn):
        conn.close()
        with self.lock:
            self.open -= 1

    def worker(self):
        while True:
            conn = self.work.get()
            try:
                keep = Handler(conn).serve_one()
                conn.served += 1
            except Exception:  # a broken connection must not take the worker down
                keep = False
            if keep and conn.buffered():
                self.dispatch(conn)
            elif keep:
                self.back.put(conn)
                self.wake_w.send(b"x")
            else:
                self.closed(conn)

    def refuser(self):
        while True:
            conn = self.refuse.get()
            try:
                conn.sock.settimeout(2.0)  # a slow client must not hold up the others
                Handler(conn).serve_one()
            except Exception:
                pass
            self.closed(conn)


def exit_when_stdin_closes(stdin):
    # The engine that spawned us holds our stdin; EOF means it died (even kill -9).
    try:
        while stdin.read(4096):
            pass
    finally:
        os._exit(0)


def read_credentials(stdin):
    """First stdin line: {"users": {name: {"key": ..., "role": "reader"|"writer"}}}."""
    line = stdin.readline()
    users = json.loads(line.decode("utf-8"))["users"]
    for name, entry in users.items():
        # the engine's own keys are 64 hex digits; a tools login's password >= 16
        if entry.get("role") not in ("reader", "writer") or len(entry.get("key", "")) < 16:
            raise SystemExit(f"chdb_http: bad credentials for {name!r}")
    return users


def open_listener(args):
    if args.listen_fd is not None:
        sock = socket.socket(fileno=args.listen_fd)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", args.port))
    sock.listen(socket.SOMAXCONN)  # (again) on an inherited socket: raises its backlog
    return sock


def main():
    global DB_PATH, SPOOL_DIR, USERS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True, help="data directory of the embedded ClickHouse")
    ap.add_argument("--lock-file", required=True, help="held for this process's lifetime")
    ap.add_argument("--listen-fd", type=int, help="an inherited listening socket")
    ap.add_argument("--port", type=int, default=0, help="without --listen-fd: bind 127.0.0.1:PORT")
    args = ap.parse_args()

    stdin = sys.stdin.buffer
    USERS = read_credentials(stdin)
    # Held until we exit: the parent waits on it before starting our successor,
    # so two engines never open the same data directory.
    lock = open(args.lock_file, "a")
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")  # who holds it, for operators and tests
    lock.flush()
    threading.Thread(target=exit_when_stdin_closes, args=(stdin,), daemon=True).start()

    data = os.path.abspath(args.path)
    os.makedirs(data, mode=0o700, exist_ok=True)
    SPOOL_DIR = os.path.join(data, "_http_spool")
    os.makedirs(SPOOL_DIR, mode=0o700, exist_ok=True)
    # The memory worker re-reads the process's RSS to correct ClickHouse's
    # memory tracker; at its default tick (~100 ms) it was half of an idle
    # engine's CPU. Once a second is still far finer than inserts change RSS.
    DB_PATH = "file:" + data + "?memory_worker_period_ms=1000"
    # Keep one connection open for the process lifetime: the engine shuts down
    # when its last connection closes, and per-request connections come and go.
    keeper = chdb.connect(DB_PATH)
    keeper.query("SELECT 1")
    load_denied_sources()

    listener = open_listener(args)
    front = Front(listener)
    print(f"READY {listener.getsockname()[1]}", flush=True)
    try:
        front.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        keeper.close()


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        time.sleep(0.1)
        sys.exit(1)
