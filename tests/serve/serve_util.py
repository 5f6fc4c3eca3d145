"""Helpers of the `oboro serve` tests: start a server on a free loopback port, HTTP calls with urllib (stdlib only)."""
import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`oboro serve` on 127.0.0.1:<free port>, stopped with SIGTERM by stop() (which returns the exit code)."""

    def __init__(self, oboro, outputs, *args, env=None):
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.log_path = os.path.join(os.path.dirname(os.path.abspath(outputs)), "server-%d.log" % self.port)
        self.log = open(self.log_path, "w")
        cmd = [oboro, "serve", "--port", str(self.port), "--outputs", outputs, *args]
        e = dict(os.environ)
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=e)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("oboro serve exited with %d:\n%s" % (self.proc.returncode, self.output()))
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError("oboro serve did not answer /health:\n" + self.output())

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("oboro serve did not stop within %d s of SIGTERM" % timeout)
        self.log.close()
        return self.proc.returncode


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def call(base, method, path, body=None, headers=None, raw=None, timeout=120):
    """One request; returns a Response for any status (errors included)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"} if data is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, e.headers, e.read())


def png_text(png):
    """tEXt / iTXt chunks of PNG bytes (keyword → text)."""
    import struct
    import zlib
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    out, i = {}, 8
    while i < len(png):
        n, kind = struct.unpack(">I4s", png[i:i + 8])
        data = png[i + 8:i + 8 + n]
        if kind == b"tEXt":
            k, v = data.split(b"\0", 1)
            out[k.decode("latin-1")] = v.decode("latin-1")
        elif kind == b"iTXt":
            k, rest = data.split(b"\0", 1)
            comp, rest = rest[0], rest[2:]
            _lang, rest = rest.split(b"\0", 1)
            _tk, text = rest.split(b"\0", 1)
            out[k.decode("utf-8")] = (zlib.decompress(text) if comp else text).decode("utf-8")
        i += 12 + n
    return out


def png_size(png):
    import struct
    return struct.unpack(">II", png[16:24])


def b64png(b64):
    return base64.b64decode(b64)
