#!/usr/bin/env python3
"""Loss-spike rollback and run notifications (issue 20), against a loopback HTTP listener:
  1. a corrupted batch (test hook OBORO_TEST_CORRUPT_BATCH, latents × 1e3) at step 3 of a 2-rank run: the spike is
     detected (loss > spike_factor × median), the run rolls back to step 2, skips that step's data, halves the LR,
     logs the event in log.jsonl and marks it in loss.svg, and completes; the webhook gets start, checkpoint, spike,
     rollback, finish with step, loss, eta_s and last_sample;
  2. a NaN batch with the guard off: the run stops (exit != 0) and the webhook gets "failure";
  3. a dead webhook (closed port): the run still completes, with one warning line;
  4. the supervisor reports "restart" after a killed rank.
Usage: test_spike_notify.py --oboro BIN --workdir DIR   (exit 77: no mpirun)"""
import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

EVENTS = []


class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        EVENTS.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def check(cond, msg):
    if not cond:
        print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oboro", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args()
    if not shutil.which("mpirun"):
        print("SKIP: no mpirun")
        return 77
    mpi = ["mpirun", "--oversubscribe", "--allow-run-as-root", "--bind-to", "none", "-np", "2"]
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    os.chdir(a.workdir)
    subprocess.run([a.oboro, "data", "shapes", "-o", "shapes", "-n", "32"], check=True, capture_output=True)
    open("prompts.txt", "w").write("a red circle --s 2\n")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/hook"

    def config(name, extra=""):
        open(f"{name}.toml", "w").write(f"""train_data_dir = "shapes"
resolution = 16
pixels_stride = 2
vocab_size = 48
hidden_size = 64
num_layers = 2
head_schedule = "uniform"
t5_layers = 1
output_dir = "{name}"
output_name = "m"
train_batch_size = 2
max_train_steps = 5
learning_rate = 5e-4
save_every_n_steps = 1
sample_prompts = "prompts.txt"
sample_every_n_steps = 2
sample_steps = 2
threads = 1
collective_timeout = 20
{extra}""")
        return f"{name}.toml"

    # 1. spike → rollback → completes (global batch 4: step 3 reads images 8..11 of epoch 0)
    cfg = config("spike", "spike_max_rollbacks = 2\nspike_factor = 3\nspike_window = 2\nspike_lr_factor = 0.5\n")
    env = dict(os.environ, OBORO_TEST_CORRUPT_BATCH="0:10:1000")
    r = subprocess.run(mpi + [a.oboro, "train", "--config", cfg, "--notify-url", url], env=env, capture_output=True,
                       text=True, timeout=300)
    check(r.returncode == 0, "the spiked run did not complete:\n" + r.stderr[-3000:])
    check("step 3: loss spike" in r.stderr and "rolled back to step 2" in r.stderr, "no rollback reported:\n" + r.stderr)
    log = [json.loads(l) for l in open("spike/log.jsonl")]
    ev = [l for l in log if l.get("event") == "rollback"]
    check(len(ev) == 1 and ev[0]["step"] == 3 and ev[0]["rollback_to"] == 2 and ev[0]["lr_scale"] == 0.5,
          f"rollback event in log.jsonl: {ev}")
    steps = [l for l in log if "event" not in l]
    check([l["step"] for l in steps] == [1, 2, 3, 4, 5], f"steps logged: {[l['step'] for l in steps]}")
    check(all(l["loss"] < 10 for l in steps), "a spiked loss was trained on")
    check(steps[-1]["lr"] == steps[1]["lr"] * 0.5, "the learning rate was not halved after the rollback")
    check("rollback 3" in open("spike/loss.svg").read(), "the loss plot does not mark the rollback")
    kinds = [e["event"] for e in EVENTS]
    for k in ("start", "checkpoint", "spike", "rollback", "finish"):
        check(k in kinds, f"webhook did not get '{k}': {kinds}")
    check(kinds[0] == "start" and kinds[-1] == "finish", f"order: {kinds}")
    fin = EVENTS[-1]
    check(fin["step"] == 5 and fin["max_train_steps"] == 5 and fin["loss"] > 0 and "eta_s" in fin, f"finish: {fin}")
    check(fin["last_sample"].endswith("samples/step-00000005.png") and os.path.exists(fin["last_sample"]),
          f"last_sample: {fin['last_sample']}")
    check(fin["ranks"] == 2, "ranks")
    check(sum(k == "checkpoint" for k in kinds) == 5, f"one checkpoint event per save: {kinds}")
    print("ok: spike rolled back, skipped, LR halved, marked; webhook events", kinds)

    # 2. the guard off: a NaN batch stops the run; the webhook hears "failure"
    EVENTS.clear()
    cfg = config("nan")
    env = dict(os.environ, OBORO_TEST_CORRUPT_BATCH="0:10:nan")
    r = subprocess.run(mpi + [a.oboro, "train", "--config", cfg, "--notify-url", url], env=env, capture_output=True,
                       text=True, timeout=300)
    check(r.returncode != 0, "a NaN loss without the guard must stop the run")
    check(r.stderr.count("step 3: the loss is nan") == 1, "expected one error line:\n" + r.stderr)
    check([e["event"] for e in EVENTS][-1] == "failure" and "nan" in EVENTS[-1]["error"], f"{EVENTS[-1:]}")
    print("ok: NaN without the guard stops the run, one message, failure notified")

    # 3. a dead webhook never stops training
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    s.close()
    cfg = config("dead")
    r = subprocess.run([a.oboro, "train", "--config", cfg, "--notify-url", dead], capture_output=True, text=True,
                       timeout=300)
    check(r.returncode == 0, "a dead webhook stopped training:\n" + r.stderr[-2000:])
    check(r.stderr.count("warning: notification") == 1, "expected one warning line:\n" + r.stderr)
    print("ok: a dead webhook: training completed with one warning")

    # 4. the supervisor's restart notification
    EVENTS.clear()
    cfg = config("sup")
    env = dict(os.environ, OBORO_TEST_FAULT=f"kill:1:2:{os.path.abspath('kill.marker')}")
    r = subprocess.run([a.oboro, "supervise", "--backoff", "0", "--notify-url", url, "--"] + mpi +
                       [a.oboro, "train", "--config", cfg], env=env, capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, "supervised run failed:\n" + r.stderr[-3000:])
    check("restart" in [e["event"] for e in EVENTS], f"no restart event: {[e['event'] for e in EVENTS]}")
    print("ok: supervisor restart notified")
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
