#!/usr/bin/env python3
"""API contract tests of `oboro serve` (issue 18) with the bundled default model, stdlib only (urllib).

Every endpoint (A1111, OpenAI, jobs + SSE, history, images, health, metrics, the UI), the bad inputs (400, 404,
413, 422, 429 + Retry-After), path traversal, auth (--api-key) and Origin/CORS rules, client disconnect cancelling a
synchronous job, SIGTERM during a job (exit 0, nothing half-written), history after a restart, and identical images
for the same request.

    python3 tests/serve/test_api.py --oboro build/oboro --workdir build/serve_api
"""
import argparse
import base64
import glob
import json
import os
import pathlib
import shutil
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Server, b64png, call, png_size, png_text  # noqa: E402

ARGS = None
PROMPT = "pixel art style, short hair, brown hair, smile, red shirt, blue background"
FAST = {"prompt": PROMPT, "steps": 6, "width": 32, "height": 32}


def metric(base, name, headers=None):
    text = call(base, "GET", "/metrics", headers=headers).body.decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError("no metric " + name + " in:\n" + text)


def wait_status(base, job_id, statuses, timeout=120, headers=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = call(base, "GET", "/oboro/v1/jobs/" + job_id, headers=headers).json()
        if s["status"] in statuses:
            return s
        time.sleep(0.05)
    raise AssertionError("job %s never reached %s" % (job_id, statuses))


class ServeApi(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.outputs = os.path.join(ARGS.workdir, "outputs")
        shutil.rmtree(cls.outputs, ignore_errors=True)
        cls.srv = Server(ARGS.oboro, cls.outputs, "--max-queue", "3", "--max-body", "2M", "--max-steps", "400")
        cls.base = cls.srv.base

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            code = cls.srv.stop()
            out = cls.srv.output()
            if code != 0 or "Sanitizer" in out or "runtime error" in out:
                raise AssertionError("oboro serve exited with %d after SIGTERM:\n%s" % (code, out[-4000:]))

    def post(self, path, body=None, **kw):
        return call(self.base, "POST", path, body, **kw)

    def get(self, path, **kw):
        return call(self.base, "GET", path, **kw)

    def long_job(self, steps=400, batch=4):
        r = self.post("/oboro/v1/jobs", dict(FAST, steps=steps, batch_size=batch))
        self.assertEqual(r.status, 202, r.body)
        return r.json()["id"]

    # ------------------------------------------------------------- A1111
    def test_txt2img(self):
        r = self.post("/sdapi/v1/txt2img", dict(FAST, seed=11, batch_size=2, negative_prompt="blurry"))
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertEqual(len(j["images"]), 2)
        info = json.loads(j["info"])
        self.assertEqual(info["all_seeds"], [11, 12])
        self.assertEqual(info["seed"], 11)
        self.assertEqual(len(info["infotexts"]), 2)
        self.assertEqual(info["all_prompts"], [PROMPT, PROMPT])
        self.assertEqual(j["parameters"]["steps"], 6)
        png = b64png(j["images"][0])
        self.assertEqual(png_size(png), (32, 32))
        text = png_text(png)
        self.assertEqual(text["parameters"], info["infotexts"][0])
        self.assertIn("Negative prompt: blurry", text["parameters"])
        self.assertIn("Steps: 6, Sampler: Euler", text["parameters"])
        self.assertIn("Seed: 11,", text["parameters"])
        self.assertEqual(json.loads(text["oboro_request"])["seed"], 11)
        # Written to the outputs folder (with the same bytes) before the reply.
        files = glob.glob(os.path.join(self.outputs, "*", "*-11.png"))
        self.assertTrue(any(pathlib.Path(f).read_bytes() == png for f in files), files)

    def test_same_request_twice_gives_the_same_image(self):
        a = self.post("/sdapi/v1/txt2img", dict(FAST, seed=1234)).json()["images"][0]
        self.post("/sdapi/v1/txt2img", dict(FAST, seed=99, prompt="a red heart, emoji"))
        b = self.post("/sdapi/v1/txt2img", dict(FAST, seed=1234)).json()["images"][0]
        self.assertEqual(a, b)

    def test_img2img(self):
        init = self.post("/sdapi/v1/txt2img", dict(FAST, seed=3)).json()["images"][0]
        r = self.post("/sdapi/v1/img2img", dict(FAST, init_images=["data:image/png;base64," + init],
                                                denoising_strength=0.5, seed=3))
        self.assertEqual(r.status, 200, r.body)
        info = json.loads(r.json()["info"])
        self.assertEqual(info["denoising_strength"], 0.5)
        self.assertIn("Denoising strength: 0.5", info["infotexts"][0])
        r = self.post("/sdapi/v1/img2img", dict(FAST, init_images=["bm90IGFuIGltYWdl"]))
        self.assertEqual((r.status, r.json()["field"]), (422, "init_images"))
        r = self.post("/sdapi/v1/img2img", dict(FAST, init_images=["***"]))
        self.assertEqual((r.status, r.json()["field"]), (422, "init_images"))
        r = self.post("/sdapi/v1/img2img", FAST)
        self.assertEqual((r.status, r.json()["field"]), (422, "init_images"))

    def test_listings_and_options(self):
        models = self.get("/sdapi/v1/sd-models").json()
        self.assertEqual(models[0]["model_name"], "oboro-default")
        self.assertRegex(models[0]["title"], r"^oboro-default \[[0-9a-f]{10}\]$")
        self.assertNotIn("/", models[0]["filename"])
        self.assertEqual(self.get("/sdapi/v1/samplers").json()[0]["name"], "Euler")
        self.assertEqual(self.get("/sdapi/v1/loras").json(), [])
        opts = self.get("/sdapi/v1/options").json()
        self.assertTrue(opts["sd_model_checkpoint"].startswith("oboro-default"))
        self.assertEqual(self.post("/sdapi/v1/options", {"sd_model_checkpoint": models[0]["title"]}).status, 200)
        self.assertEqual(self.post("/sdapi/v1/options", {"sd_model_checkpoint": "no-such-model"}).status, 404)
        self.assertEqual(self.post("/sdapi/v1/options", {"sd_model_checkpoint": "../../etc/passwd"}).status, 422)
        self.assertEqual(self.post("/sdapi/v1/options", {"sd_model_checkpoint": 5}).status, 422)
        oa = self.get("/v1/models").json()
        self.assertEqual(oa["object"], "list")
        self.assertEqual(oa["data"][0]["id"], "oboro-default")

    def test_png_info(self):
        img = self.post("/sdapi/v1/txt2img", dict(FAST, seed=21)).json()["images"][0]
        r = self.post("/sdapi/v1/png-info", {"image": img})
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertIn("Seed: 21", j["info"])
        self.assertEqual(j["parameters"]["Seed"], "21")
        self.assertEqual(j["parameters"]["Prompt"], PROMPT)
        self.assertIn("oboro_request", j["items"])
        self.assertEqual(self.post("/sdapi/v1/png-info", {"image": "%%%"}).status, 422)
        self.assertEqual(self.post("/sdapi/v1/png-info", {}).status, 422)

    def test_progress_and_interrupt(self):
        idle = self.get("/sdapi/v1/progress").json()
        self.assertIn("state", idle)
        job = self.long_job()
        wait_status(self.base, job, ["running"])
        deadline = time.time() + 30
        p = None
        while time.time() < deadline:
            p = self.get("/sdapi/v1/progress").json()
            if p["state"]["sampling_step"] >= 2 and p["current_image"]:
                break
            time.sleep(0.05)
        self.assertEqual(p["state"]["job"], job)
        self.assertGreater(p["progress"], 0)
        t0 = time.time()  # the other endpoints answer while the worker generates
        for path in ["/health", "/sdapi/v1/sd-models", "/oboro/v1/history", "/metrics", "/"]:
            self.assertEqual(self.get(path).status, 200, path)
        self.assertLess(time.time() - t0, 5)
        self.assertEqual(p["state"]["sampling_steps"], 400)
        self.assertEqual(png_size(b64png(p["current_image"]))[0], 32)
        self.assertIsNone(self.get("/sdapi/v1/progress?skip_current_image=true").json()["current_image"])
        self.assertEqual(self.post("/sdapi/v1/interrupt").json(), {"interrupted": True})
        s = wait_status(self.base, job, ["cancelled", "completed", "failed"])
        self.assertEqual(s["status"], "cancelled")
        self.assertLess(s["step"], 400)

    # ------------------------------------------------------------- OpenAI
    def test_openai(self):
        r = self.post("/v1/images/generations", {"prompt": PROMPT, "n": 2, "size": "32x32", "response_format": "b64_json", "steps": 6})
        self.assertEqual(r.status, 200, r.body)
        j = r.json()
        self.assertIsInstance(j["created"], int)
        self.assertEqual(len(j["data"]), 2)
        self.assertEqual(png_size(base64.b64decode(j["data"][0]["b64_json"])), (32, 32))
        r = self.post("/v1/images/generations", {"prompt": PROMPT, "size": "32x32", "response_format": "url", "steps": 6})
        url = r.json()["data"][0]["url"]
        self.assertTrue(url.startswith(self.base + "/oboro/v1/images/"), url)
        self.assertEqual(call(url, "GET", "").status, 200)
        r = self.post("/v1/images/generations", {"prompt": PROMPT, "size": "huge"})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.json()["error"]["param"], "size")
        self.assertEqual(self.post("/v1/images/generations", {"n": 1}).json()["error"]["param"], "prompt")
        self.assertEqual(self.post("/v1/images/generations", {"prompt": "x", "model": "nope"}).status, 404)

    # ------------------------------------------------------------- jobs, SSE, history, images
    def test_job_lifecycle_and_events(self):
        r = self.post("/oboro/v1/jobs", dict(FAST, steps=16, seed=77))
        self.assertEqual(r.status, 202, r.body)
        j = r.json()
        self.assertRegex(j["id"], "^[0-9a-f]{16}$")
        self.assertIn(j["status"], ("queued", "running"))
        self.assertIn("position", j)
        self.assertEqual(r.headers["Location"], "/oboro/v1/jobs/" + j["id"])
        events, previews = [], 0
        import urllib.request
        with urllib.request.urlopen(self.base + j["events"], timeout=60) as s:
            self.assertTrue(s.headers["Content-Type"].startswith("text/event-stream"))
            name = None
            for raw in s:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    d = json.loads(line[6:])
                    events.append((name, d))
                    previews += "preview" in d
                    if name == "done":
                        break
        names = [e[0] for e in events]
        self.assertEqual(names[-1], "done")
        self.assertIn("progress", names)
        steps = [d["step"] for n, d in events if n == "progress"]
        self.assertEqual(steps, sorted(steps))
        self.assertTrue(any("eta_relative" in d for n, d in events if n == "progress"))
        self.assertGreaterEqual(previews, 2)
        done = events[-1][1]
        self.assertEqual(done["status"], "completed")
        self.assertEqual(done["images"][0]["seed"], 77)
        img = self.get(done["images"][0]["url"])
        self.assertEqual(img.status, 200)
        self.assertEqual(img.headers["Content-Type"], "image/png")
        self.assertIn("Seed: 77", png_text(img.body)["parameters"])
        s = self.get("/oboro/v1/jobs/" + j["id"]).json()
        self.assertEqual(s["status"], "completed")
        self.assertEqual(s["progress"], 1)
        self.assertEqual(self.post("/oboro/v1/jobs/%s/cancel" % j["id"]).status, 409)
        h = self.get("/oboro/v1/history?limit=5").json()
        self.assertGreaterEqual(h["total"], 1)
        self.assertTrue(any(it["file"] == done["images"][0]["file"] for it in h["items"]))
        item = [it for it in h["items"] if it["file"] == done["images"][0]["file"]][0]
        self.assertEqual((item["prompt"], item["seed"], item["steps"], item["job_id"]), (PROMPT, 77, 16, j["id"]))

    def test_cancel_running_and_queued(self):
        running = self.long_job()
        queued = self.post("/oboro/v1/jobs", FAST).json()["id"]
        wait_status(self.base, running, ["running"])
        self.assertEqual(self.get("/oboro/v1/jobs/" + queued).json()["position"], 1)
        active = [x["id"] for x in self.get("/oboro/v1/jobs").json()["jobs"]]
        self.assertEqual(active[:2], [running, queued])
        r = self.post("/oboro/v1/jobs/%s/cancel" % queued)
        self.assertEqual((r.status, r.json()["status"]), (200, "cancelled"))
        r = self.post("/oboro/v1/jobs/%s/cancel" % running)
        self.assertEqual(r.status, 200)
        s = wait_status(self.base, running, ["cancelled", "completed", "failed"], timeout=20)
        self.assertEqual(s["status"], "cancelled")
        self.assertEqual(s["images"], [])
        self.assertEqual(self.post("/oboro/v1/jobs/0123456789abcdef/cancel").status, 404)
        self.assertEqual(self.get("/oboro/v1/jobs/0123456789abcdef").status, 404)
        self.assertEqual(self.get("/oboro/v1/jobs/../../etc").status, 404)

    def test_queue_full_is_429_with_retry_after(self):
        ids = [self.long_job()]
        wait_status(self.base, ids[0], ["running"])
        ids += [self.long_job() for _ in range(3)]  # --max-queue 3
        r = self.post("/oboro/v1/jobs", FAST)
        self.assertEqual(r.status, 429, r.body)
        self.assertGreaterEqual(int(r.headers["Retry-After"]), 1)
        r = self.post("/sdapi/v1/txt2img", FAST)
        self.assertEqual(r.status, 429)
        self.assertGreaterEqual(metric(self.base, 'oboro_jobs_total{status="rejected"}'), 2)
        self.assertEqual(metric(self.base, "oboro_queue_length"), 3)
        for i in ids:
            self.post("/oboro/v1/jobs/%s/cancel" % i)
        for i in ids:
            wait_status(self.base, i, ["cancelled"])

    def test_bad_inputs(self):
        r = self.post("/sdapi/v1/txt2img", raw=b"{not json")
        self.assertEqual(r.status, 400)
        self.assertEqual(self.post("/oboro/v1/jobs", raw=b"[1,2]").status, 400)
        for body, field in [({"steps": "many"}, "steps"), ({"steps": 0}, "steps"), ({"steps": 10 ** 6}, "steps"),
                            ({"width": 33, "height": 32}, "width"), ({"width": 64}, "height"),
                            ({"width": 100000, "height": 32}, "width"), ({"cfg_scale": "high"}, "cfg_scale"),
                            ({"batch_size": 1000}, "batch_size"), ({"sampler_name": "DPM++ 2M"}, "sampler_name"),
                            ({"seed": "x"}, "seed"), ({"prompt": ["a"]}, "prompt")]:
            r = self.post("/sdapi/v1/txt2img", dict({"prompt": "x"}, **body))
            self.assertEqual(r.status, 422, (body, r.body))
            self.assertEqual(r.json()["field"], field, body)
            self.assertEqual(r.json()["detail"][0]["loc"], ["body", field])
        # Models: unknown → 404, a path → 422; never a file outside the models folder.
        r = self.post("/sdapi/v1/txt2img", dict(FAST, override_settings={"sd_model_checkpoint": "nope"}))
        self.assertEqual(r.status, 404)
        for name in ["../oboro-default", "/etc/passwd", "a/b", "..", "models/default/oboro-default"]:
            r = self.post("/sdapi/v1/txt2img", dict(FAST, override_settings={"sd_model_checkpoint": name}))
            self.assertEqual(r.status, 422, name)
        # Body size → 413.
        r = self.post("/sdapi/v1/txt2img", raw=b'{"prompt": "' + b"a" * (3 << 20) + b'"}')
        self.assertEqual(r.status, 413)
        # Images: only YYYY-MM-DD/NNNNN-SEED.png under the outputs folder.
        for p in ["/oboro/v1/images/../history.jsonl", "/oboro/v1/images/%2e%2e/%2e%2e/etc/passwd",
                  "/oboro/v1/images/2020-01-01/00000-1.png", "/oboro/v1/history.jsonl"]:
            self.assertEqual(self.get(p).status, 404, p)
        self.assertEqual(self.get("/oboro/v1/history?limit=x").status, 422)
        self.assertEqual(self.get("/no/such/endpoint").status, 404)
        self.assertEqual(call(self.base, "DELETE", "/oboro/v1/history").status, 404)
        # Still alive and well.
        self.assertEqual(self.get("/health").json()["status"], "ok")

    def test_client_disconnect_cancels_sync_job(self):
        before = metric(self.base, 'oboro_jobs_total{status="cancelled"}')
        body = json.dumps(dict(FAST, steps=400, batch_size=4)).encode()
        s = socket.create_connection(("127.0.0.1", self.srv.port))
        s.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        time.sleep(1.0)
        s.close()
        deadline = time.time() + 20
        while time.time() < deadline and metric(self.base, 'oboro_jobs_total{status="cancelled"}') == before:
            time.sleep(0.1)
        self.assertEqual(metric(self.base, 'oboro_jobs_total{status="cancelled"}'), before + 1)
        self.assertEqual(metric(self.base, "oboro_job_running"), 0)

    def test_health_metrics_ui(self):
        h = self.get("/health").json()
        self.assertEqual(h["status"], "ok")
        text = self.get("/metrics").body.decode()
        for name in ["oboro_queue_length", "oboro_jobs_total{status=\"completed\"}", "oboro_seconds_per_image",
                     "oboro_resident_memory_bytes", "oboro_images_total"]:
            self.assertIn(name, text)
        ui = self.get("/")
        self.assertEqual(ui.status, 200)
        self.assertIn(b"<title>oboro</title>", ui.body)
        self.assertIn("default-src 'self'", ui.headers["Content-Security-Policy"])
        self.assertEqual(self.get("/app.js").status, 200)
        self.assertEqual(self.get("/style.css").status, 200)
        info = self.get("/oboro/v1/info").json()
        self.assertEqual(info["resolution"], "32x32")

    def test_origin_checks(self):
        r = self.get("/health", headers={"Origin": "http://evil.example"})
        self.assertEqual(r.status, 403)
        r = self.post("/oboro/v1/jobs", FAST, headers={"Origin": "http://evil.example"})
        self.assertEqual(r.status, 403)
        self.assertIsNone(self.get("/health").headers.get("Access-Control-Allow-Origin"))
        same = self.get("/health", headers={"Origin": self.base})
        self.assertEqual(same.status, 200)
        # DNS rebinding: a loopback server answers loopback host names only.
        r = self.get("/sdapi/v1/sd-models", headers={"Host": "evil.example:%d" % self.srv.port})
        self.assertEqual(r.status, 403)
        self.assertEqual(self.get("/health", headers={"Host": "localhost:%d" % self.srv.port}).status, 200)


class ServeProcess(unittest.TestCase):
    """Servers of their own: API key, CORS, SIGTERM, restart."""

    def test_api_key(self):
        srv = Server(ARGS.oboro, os.path.join(ARGS.workdir, "out-key"), "--api-key", "s3cret")
        try:
            self.assertEqual(call(srv.base, "GET", "/health").status, 200)
            self.assertEqual(call(srv.base, "GET", "/").status, 200)  # the UI's files (no data; they ask for the key)
            for method, path in [("GET", "/sdapi/v1/sd-models"), ("GET", "/metrics"), ("GET", "/oboro/v1/history"),
                                 ("POST", "/sdapi/v1/txt2img"), ("POST", "/oboro/v1/jobs"), ("GET", "/v1/models"),
                                 ("GET", "/sdapi/v1/progress"), ("POST", "/sdapi/v1/interrupt")]:
                r = call(srv.base, method, path, FAST if method == "POST" else None)
                self.assertEqual(r.status, 401, path)
                self.assertEqual(r.headers["WWW-Authenticate"], "Bearer")
                r = call(srv.base, method, path, FAST if method == "POST" else None, headers={"Authorization": "Bearer wrong"})
                self.assertEqual(r.status, 401, path)
            ok = {"Authorization": "Bearer s3cret"}
            self.assertEqual(call(srv.base, "GET", "/sdapi/v1/sd-models", headers=ok).status, 200)
            r = call(srv.base, "POST", "/sdapi/v1/txt2img", FAST, headers=ok)
            self.assertEqual(r.status, 200, r.body)
        finally:
            self.assertEqual(srv.stop(), 0)

    def test_non_loopback_warning_and_cors(self):
        srv = Server(ARGS.oboro, os.path.join(ARGS.workdir, "out-cors"), "--host", "0.0.0.0",
                     "--cors", "http://app.example")
        try:
            base = srv.base
            r = call(base, "OPTIONS", "/sdapi/v1/txt2img", headers={"Origin": "http://app.example",
                                                                     "Access-Control-Request-Method": "POST"})
            self.assertEqual(r.status, 204)
            self.assertEqual(r.headers["Access-Control-Allow-Origin"], "http://app.example")
            self.assertIn("Authorization", r.headers["Access-Control-Allow-Headers"])
            r = call(base, "GET", "/sdapi/v1/samplers", headers={"Origin": "http://app.example"})
            self.assertEqual(r.headers["Access-Control-Allow-Origin"], "http://app.example")
            self.assertEqual(call(base, "GET", "/health", headers={"Origin": "http://other.example"}).status, 403)
        finally:
            srv.stop()
        self.assertIn("warning: listening on 0.0.0.0 without --api-key", srv.output())

    def test_sigterm_during_a_job_and_history_after_restart(self):
        out = os.path.join(ARGS.workdir, "out-restart")
        shutil.rmtree(out, ignore_errors=True)
        srv = Server(ARGS.oboro, out)
        files = []
        try:
            for seed in (5, 6):
                j = json.loads(call(srv.base, "POST", "/sdapi/v1/txt2img", dict(FAST, seed=seed)).body)
                self.assertEqual(len(j["images"]), 1)
            files = [it["file"] for it in call(srv.base, "GET", "/oboro/v1/history").json()["items"]]
            self.assertEqual(len(files), 2)
            job = call(srv.base, "POST", "/oboro/v1/jobs", dict(FAST, steps=150, batch_size=8)).json()["id"]
            wait_status(srv.base, job, ["running"])
            t0 = time.time()
        finally:
            code = srv.stop(timeout=30)
        self.assertEqual(code, 0, srv.output())
        self.assertLess(time.time() - t0, 15)
        self.assertIn("stopped", srv.output())
        leftovers = [p for p in glob.glob(os.path.join(out, "**", "*"), recursive=True)
                     if not (p.endswith(".png") or p.endswith("history.jsonl") or os.path.isdir(p))]
        self.assertEqual(leftovers, [])
        self.assertEqual(len(glob.glob(os.path.join(out, "*", "*.png"))), 2)  # the cancelled job wrote nothing
        srv2 = Server(ARGS.oboro, out)
        try:
            h = call(srv2.base, "GET", "/oboro/v1/history").json()
            self.assertEqual([it["file"] for it in h["items"]], files)
            self.assertEqual(h["items"][0]["seed"], 6)
            self.assertEqual(call(srv2.base, "GET", h["items"][0]["url"]).status, 200)
        finally:
            self.assertEqual(srv2.stop(), 0)


class ServeLora(unittest.TestCase):
    """<lora:NAME:W> in prompts and /sdapi/v1/loras with --lora-dir (issue 19): a LoRA extracted by oboro merge."""

    @classmethod
    def setUpClass(cls):
        import subprocess
        d = os.path.join(ARGS.workdir, "lora")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(os.path.join(d, "loras"))
        model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models", "default",
                             "oboro-default.safetensors")
        bf16 = os.path.join(d, "bf16.safetensors")
        subprocess.run([ARGS.oboro, "merge", "--mode", "no-interpolation", model, "--dtype", "bf16", "-o", bf16],
                       check=True, capture_output=True)
        subprocess.run([ARGS.oboro, "merge", "--mode", "extract-lora", "--rank", "2", model, bf16, "-o",
                        os.path.join(d, "loras", "diff.safetensors")], check=True, capture_output=True)
        cls.srv = Server(ARGS.oboro, os.path.join(d, "outputs"), "--lora-dir", os.path.join(d, "loras"))

    @classmethod
    def tearDownClass(cls):
        rc = cls.srv.stop()
        if rc != 0:
            raise AssertionError("oboro serve exited with %d" % rc)

    def test_listing_tag_and_unknown_name(self):
        loras = call(self.srv.base, "GET", "/sdapi/v1/loras").json()
        self.assertEqual([l["name"] for l in loras], ["diff"])
        self.assertEqual(loras[0]["metadata"]["modelspec.architecture"], "oboro-dit-v1/lora")
        r = call(self.srv.base, "POST", "/sdapi/v1/txt2img", dict(FAST, prompt=PROMPT + " <lora:diff:0.5>", steps=2))
        self.assertEqual(r.status, 200, r.body)
        info = json.loads(r.json()["info"])["infotexts"][0]
        self.assertRegex(info, r'Lora hashes: "diff: [0-9a-f]{12}"')
        self.assertIn("<lora:diff:0.5>", info)  # kept in the infotext prompt, as A1111 does
        r = call(self.srv.base, "POST", "/sdapi/v1/txt2img", dict(FAST, prompt=PROMPT + " <lora:nope:1>", steps=2))
        self.assertEqual((r.status, r.json()["field"]), (422, "prompt"))
        self.assertIn("<lora:nope>", r.json()["error"])


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    ARGS, rest = ap.parse_known_args()
    os.makedirs(ARGS.workdir, exist_ok=True)
    unittest.main(argv=[sys.argv[0], "-v", *rest])


if __name__ == "__main__":
    main()
