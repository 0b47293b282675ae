"""The course's HelloServer called from Python over warren's JSON path (docs/rpc.md).

Usage: objects_hello.py HOST PORT
Only the standard library: POST /v1/objects/NAME/METHOD with the arguments as a JSON array.
Fails (exit 1) on the first answer that differs from what the object server documents.
"""

import json
import sys
import urllib.error
import urllib.request

host, port = sys.argv[1], int(sys.argv[2])
base = f"http://{host}:{port}/v1/objects"


def call(name, method, *args, headers=None):
    """The method's answer as (status, decoded JSON)."""
    request = urllib.request.Request(
        f"{base}/{name}/{method}",
        data=json.dumps(list(args)).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def expect(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")


status, hello = call("HelloServer", "sayHello")
expect(status == 200 and hello == "Hello World!", f"sayHello -> {status} {hello!r}")
print(hello)

status, squares = call("NiftyObjectServer", "execute", {"Squares": {"n": 5}})
expect(status == 200 and squares == {"Squares": [0, 1, 4, 9, 16]}, f"execute -> {status} {squares!r}")

status, error = call("NiftyObjectServer", "execute", {"Squares": {"n": 10**7}})
expect(status == 422 and error["error"]["value"] == {"TooLarge": {"max": 1000000}}, f"too large -> {status} {error!r}")

status, error = call("Nobody", "sayHello")
expect(status == 404 and error["error"]["code"] == "no_such_object", f"unknown object -> {status} {error!r}")

status, hello = call("HelloServer", "sayHello", headers={"Warren-Interface": "Hello", "Warren-Version": "1"})
expect(status == 200 and hello == "Hello World!", f"sayHello at version 1 -> {status} {hello!r}")

with urllib.request.urlopen(f"{base}/HelloServer", timeout=10) as answer:
    info = json.load(answer)
expect(info["name"] == "HelloServer" and info["interface"] == "Hello", f"GET HelloServer -> {info!r}")
print("ok")
