"""HTTP/1.1 conformance of a warren server as Python's http.client sees it.

Usage: http_conformance.py HOST PORT EXPECTED_BIG_LEN
Every request goes over one keep-alive connection; the script fails (exit 1) on the first
answer http.client rejects or that differs from what RFC 9110/9112 ask for.
"""

import http.client
import sys

host, port, big_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conn = http.client.HTTPConnection(host, port, timeout=10)
checks = 0


def expect(cond, what):
    global checks
    if not cond:
        sys.exit(f"FAIL: {what}")
    checks += 1


def get(method, path, headers=None):
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


resp, body = get("GET", "/")
expect(resp.status == 200 and body == b"<h1>warren</h1>\n", f"GET / -> {resp.status} {body!r}")
expect(resp.getheader("Content-Type") == "text/html; charset=utf-8", "Content-Type of index.html")
expect(resp.getheader("Date") is not None and resp.getheader("Server") is not None, "Date and Server")
sock = conn.sock
etag, modified = None, None

resp, body = get("GET", "/big.bin")
expect(resp.status == 200 and len(body) == big_len, f"GET /big.bin -> {resp.status}, {len(body)} bytes")
etag, modified = resp.getheader("ETag"), resp.getheader("Last-Modified")
expect(etag is not None and etag.startswith('"'), f"a strong ETag: {etag}")
expect(modified is not None and modified.endswith("GMT"), f"Last-Modified: {modified}")

resp, body = get("HEAD", "/big.bin")
expect(resp.status == 200 and body == b"", "HEAD has no body")
expect(resp.getheader("Content-Length") == str(big_len), "HEAD carries the GET's Content-Length")

resp, body = get("GET", "/big.bin", {"Range": "bytes=-10"})
expect(resp.status == 206 and len(body) == 10, f"suffix range -> {resp.status}, {len(body)} bytes")
expect(resp.getheader("Content-Range") == f"bytes {big_len - 10}-{big_len - 1}/{big_len}", "Content-Range")

resp, body = get("GET", "/big.bin", {"Range": f"bytes={big_len}-"})
expect(resp.status == 416, f"unsatisfiable range -> {resp.status}")
expect(resp.getheader("Content-Range") == f"bytes */{big_len}", "416 names the length")

resp, body = get("GET", "/big.bin", {"If-None-Match": etag})
expect(resp.status == 304 and body == b"", f"If-None-Match -> {resp.status}")
expect(resp.getheader("ETag") == etag, "304 repeats the ETag")

resp, body = get("GET", "/big.bin", {"If-Modified-Since": modified})
expect(resp.status == 304, f"If-Modified-Since -> {resp.status}")

resp, body = get("GET", "/big.bin", {"If-Range": '"stale"', "Range": "bytes=0-9"})
expect(resp.status == 200 and len(body) == big_len, f"If-Range with a stale tag -> whole file, {resp.status}")

resp, body = get("GET", "/missing")
expect(resp.status == 404 and len(body) > 0, f"missing -> {resp.status}")

resp, body = get("DELETE", "/big.bin")
expect(resp.status == 405 and "GET" in (resp.getheader("Allow") or ""), f"DELETE -> {resp.status}, Allow")

expect(conn.sock is sock, "every answer came over the first connection")
conn.close()
print(f"ok {checks} checks")
