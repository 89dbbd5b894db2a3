"""EXPECTATIONS.md as running code: a one-node, in-memory stand-in for the
Riak HTTP API that the riak client's in-scope tests need, written from that
file. `run.sh --stub` runs the client's tests against it, which shows that
the harness can go green and that the spec is enough (it is how the
equality-query `return_terms` rule and test_set_indexes' MapReduce were
found). Not a server to ship or to copy: one actor, no quorums, no
durability, a listing timeout faked with sleeps."""
import base64
import email.utils
import json
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote_plus, unquote_plus

LOCK = threading.Lock()
OBJECTS = {}   # (type, bucket, key) -> {"clock": {actor: n}, "sibs": [sib]}
COUNTERS = {}  # (bucket, key) -> int
BUCKET_PROPS = {}  # (type, bucket) -> overrides
DEFAULTS = {"n_val": 3, "allow_mult": True, "last_write_wins": False, "r": "quorum", "w": "quorum",
            "dw": "quorum", "rw": "quorum", "pr": 0, "pw": 0, "basic_quorum": False, "notfound_ok": True}
TYPES = {"default": dict(DEFAULTS), "no_siblings": dict(DEFAULTS, allow_mult=False)}
RESOURCES = {"riak_kv_wm_buckets": "/buckets", "riak_kv_wm_bucket_type": "/types", "riak_kv_wm_counter": "/buckets",
             "riak_kv_wm_index": "/buckets", "riak_kv_wm_keylist": "/buckets", "riak_kv_wm_object": "/buckets",
             "riak_kv_wm_ping": "/ping", "riak_kv_wm_preflist": "/types", "riak_kv_wm_props": "/buckets",
             "riak_kv_wm_raw": "/riak", "riak_kv_wm_stats": "/stats"}
ACTOR = "n1"


def props_of(t, b):
    return dict(TYPES[t], **BUCKET_PROPS.get((t, b), {}), name=b)


def encode_ctx(clock):
    return base64.b64encode(json.dumps(clock, sort_keys=True).encode()).decode()


def decode_ctx(v):
    return json.loads(base64.b64decode(v)) if v else {}


def covered(dot, ctx):
    return ctx.get(dot[0], 0) >= dot[1]


def live(obj):
    return [s for s in obj["sibs"] if not s["deleted"]]


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, body=b"", ctype="text/plain", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def start_chunked(self, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        if isinstance(data, str):
            data = data.encode()
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunked(self):
        self.wfile.write(b"0\r\n\r\n")

    def parse(self):
        raw, _, qs = self.path.partition("?")
        segs = [unquote_plus(s) for s in raw.split("/")[1:]]
        q = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        if segs and segs[0] == "types" and len(segs) >= 2:
            t, rest = segs[1], segs[2:]
        else:
            t, rest = "default", segs
        return segs, t, rest, q, body

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, m):
        segs, t, rest, q, body = self.parse()
        if segs == [""]:
            return self.send(200, json.dumps(RESOURCES), "application/json")
        if segs == ["ping"]:
            return self.send(200, "OK")
        if segs == ["stats"]:
            return self.send(200, json.dumps({"riak_kv_version": "2.2.6", "nodename": "stub@127.0.0.1"}), "application/json")
        if t not in TYPES:
            return self.send(404, "Unknown bucket type")
        if segs[0] == "types" and rest == ["props"]:
            if m == "GET":
                return self.send(200, json.dumps({"props": dict(TYPES[t], name=t)}), "application/json")
            if m == "PUT":
                with LOCK:
                    new = json.loads(body)["props"]
                    new.pop("name", None)
                    TYPES[t].update(new)
                return self.send(204)
        if rest[:1] != ["buckets"]:
            return self.send(404, "no route")
        if rest == ["buckets"]:
            return self.list_buckets(t, q)
        b = rest[1]
        tail = rest[2:]
        if tail == ["props"]:
            return self.bucket_props(m, t, b, body)
        if tail == ["keys"] and m == "GET":
            return self.list_keys(t, b, q)
        if tail == ["keys"] and m == "POST":
            return self.put(t, b, uuid.uuid4().hex, q, body, created=True)
        if len(tail) == 2 and tail[0] == "keys":
            k = tail[1]
            if m == "GET":
                return self.get(t, b, k)
            if m in ("PUT", "POST"):
                return self.put(t, b, k, q, body)
            if m == "DELETE":
                return self.delete(t, b, k)
        if tail[:1] == ["index"]:
            return self.index(t, b, tail[1:], q)
        if len(tail) == 2 and tail[0] == "counters" and t == "default":
            return self.counter(m, b, tail[1], q, body)
        return self.send(404, "no route")

    # ---- props
    def bucket_props(self, m, t, b, body):
        with LOCK:
            if m == "GET":
                return self.send(200, json.dumps({"props": props_of(t, b)}), "application/json")
            if m == "PUT":
                BUCKET_PROPS.setdefault((t, b), {}).update(json.loads(body)["props"])
                return self.send(204)
            if m == "DELETE":
                BUCKET_PROPS.pop((t, b), None)
                return self.send(204)

    # ---- objects
    def sib_headers(self, b, s):
        ct = s["ctype"] + ("; charset=%s" % s["charset"] if s["charset"] else "")
        links = ['</buckets/%s>; rel="up"' % quote_plus(b)] + [
            '</buckets/%s/keys/%s>; riaktag="%s"' % (quote_plus(lb), quote_plus(lk), quote_plus(lt))
            for lb, lk, lt in s["links"]]
        h = [("Content-Type", ct), ("Link", ", ".join(links)), ("Etag", s["vtag"]),
             ("Last-Modified", email.utils.formatdate(s["lastmod"], usegmt=True))]
        if s["deleted"]:
            h.append(("X-Riak-Deleted", "true"))
        h += s["meta"]
        idx = {}
        for f, v in s["indexes"]:
            idx.setdefault(f, []).append(v)
        h += [("X-Riak-Index-" + f, ", ".join(vs)) for f, vs in idx.items()]
        return h

    def answer_object(self, t, b, k, obj, status_single=200, extra=()):
        vclock = ("X-Riak-Vclock", encode_ctx(obj["clock"]))
        sibs = obj["sibs"]
        if not live(obj):
            return self.send(404, "not found\n", headers=[vclock])
        if len(sibs) == 1:
            s = sibs[0]
            h = [vclock] + [x for x in self.sib_headers(b, s) if x[0] != "Content-Type"] + list(extra)
            return self.send(status_single, s["value"], s["ctype"] + ("; charset=%s" % s["charset"] if s["charset"] else ""), h)
        boundary = uuid.uuid4().hex
        out = b""
        for s in sibs:
            out += b"\r\n--" + boundary.encode() + b"\r\n"
            out += "".join("%s: %s\r\n" % hv for hv in self.sib_headers(b, s)).encode() + b"\r\n" + s["value"]
        out += b"\r\n--" + boundary.encode() + b"--\r\n"
        return self.send(300, out, "multipart/mixed; boundary=" + boundary, [vclock] + list(extra))

    def get(self, t, b, k):
        with LOCK:
            obj = OBJECTS.get((t, b, k))
            if obj is None:
                return self.send(404, "not found\n")
            return self.answer_object(t, b, k, obj)

    def put(self, t, b, k, q, body, created=False):
        ctype_full = self.headers.get("Content-Type")
        if not ctype_full:
            return self.send(400, "Missing Content-Type")
        ctype, _, params = ctype_full.partition(";")
        m = re.search(r'charset="?([^";]+)"?', params)
        links = []
        for lh in self.headers.get_all("Link") or []:
            for one in lh.split(","):
                mm = re.match(r'\s*</buckets/([^/]+)/keys/([^/]+)>; ?riaktag="([^"]+)"', one)
                if mm:
                    links.append(tuple(unquote_plus(g) for g in mm.groups()))
        meta = [(h, v) for h, v in self.headers.items() if h.lower().startswith("x-riak-meta-")]
        indexes = set()
        for h, v in self.headers.items():
            if h.lower().startswith("x-riak-index-"):
                f = h[len("x-riak-index-"):].lower()
                for val in v.split(","):
                    val = val.strip()
                    if f.endswith("_int"):
                        val = str(int(val))
                    indexes.add((f, val))
        with LOCK:
            obj = OBJECTS.setdefault((t, b, k), {"clock": {}, "sibs": []})
            if self.headers.get("If-None-Match") == "*" and live(obj):
                return self.send(412, "exists")
            ctx = decode_ctx(self.headers.get("X-Riak-Vclock"))
            if not props_of(t, b)["allow_mult"]:
                ctx = dict(obj["clock"])
            n = obj["clock"].get(ACTOR, 0) + 1
            obj["clock"][ACTOR] = n
            keep = [s for s in obj["sibs"] if not covered(s["dot"], ctx)]
            keep.append({"dot": (ACTOR, n), "value": body, "ctype": ctype.strip(), "charset": m.group(1) if m else None,
                         "links": links, "meta": meta, "indexes": sorted(indexes), "lastmod": time.time(),
                         "vtag": uuid.uuid4().hex[:22], "deleted": False})
            obj["sibs"] = keep
            loc = [("Location", "/buckets/%s/keys/%s" % (quote_plus(b), quote_plus(k)))] if created else []
            if q.get("returnbody") == "true":
                return self.answer_object(t, b, k, obj, 201 if created else 200, loc)
            return self.send(201 if created else 204, headers=loc)

    def delete(self, t, b, k):
        with LOCK:
            obj = OBJECTS.get((t, b, k))
            if obj is None or not live(obj):
                return self.send(404, "not found\n")
            hdr = self.headers.get("X-Riak-Vclock")
            ctx = decode_ctx(hdr) if hdr else dict(obj["clock"])
            n = obj["clock"].get(ACTOR, 0) + 1
            obj["clock"][ACTOR] = n
            keep = [s for s in obj["sibs"] if not covered(s["dot"], ctx)]
            keep.append({"dot": (ACTOR, n), "value": b"", "ctype": "text/plain", "charset": None, "links": [],
                         "meta": [], "indexes": [], "lastmod": time.time(), "vtag": uuid.uuid4().hex[:22],
                         "deleted": True})
            obj["sibs"] = keep
            return self.send(204)

    # ---- listing
    def list_buckets(self, t, q):
        with LOCK:
            names = sorted({b for (tt, b, k), o in OBJECTS.items() if tt == t and live(o)})
        if q.get("buckets") == "stream":
            self.start_chunked("application/json")
            for i in range(0, len(names), 10):
                self.chunk(json.dumps({"buckets": names[i:i + 10]}))
            return self.end_chunked()
        return self.send(200, json.dumps({"buckets": names}), "application/json")

    def list_keys(self, t, b, q):
        with LOCK:
            keys = sorted(k for (tt, bb, k), o in OBJECTS.items() if tt == t and bb == b and live(o))
        if q.get("keys") == "stream":
            self.start_chunked("application/json")
            started = time.monotonic()
            timeout = int(q["timeout"]) if "timeout" in q else None
            for i in range(0, len(keys), 100):
                # A 1 ms budget is always spent: this stub sleeps to stand in
                # for the coverage round trips of a real listing.
                time.sleep(0.002)
                if timeout and (time.monotonic() - started) * 1000 > timeout:
                    self.chunk(json.dumps({"error": "timeout"}))
                    return self.end_chunked()
                self.chunk(json.dumps({"keys": keys[i:i + 100]}))
            # Riak ends the stream with an empty list; the client drops it.
            self.chunk(json.dumps({"keys": []}))
            return self.end_chunked()
        return self.send(200, json.dumps({"keys": keys}), "application/json")

    # ---- 2i
    def index(self, t, b, parts, q):
        field = parts[0]
        start = parts[1]
        end = parts[2] if len(parts) > 2 else start
        is_int = field.endswith("_int")
        conv = int if is_int else str
        lo, hi = conv(start), conv(end)
        with LOCK:
            res = set()
            for (tt, bb, k), o in OBJECTS.items():
                if tt != t or bb != b:
                    continue
                for s in live(o):
                    for f, v in s["indexes"]:
                        if f == field and lo <= conv(v) <= hi:
                            res.add((conv(v), k))
        res = sorted(res)
        if q.get("term_regex"):
            res = [r for r in res if re.search(q["term_regex"], str(r[0]))]
        if q.get("continuation"):
            last = json.loads(base64.b64decode(q["continuation"]))
            last = (conv(last[0]), last[1])
            res = [r for r in res if r > last]
        mx = int(q["max_results"]) if "max_results" in q else None
        if mx is not None:
            res = res[:mx]
        cont = None
        if mx is not None and len(res) == mx:
            cont = base64.b64encode(json.dumps([str(res[-1][0]), res[-1][1]]).encode()).decode()
        # Equality queries never return terms (riak_index: the query's
        # return_terms is false for eq); the client injects the term itself.
        terms = q.get("return_terms") == "true" and len(parts) > 2

        def enc(batch):
            if terms:
                return {"results": [{str(v): k} for v, k in batch]}
            return {"keys": [k for v, k in batch]}
        if q.get("stream") == "true":
            boundary = uuid.uuid4().hex
            self.start_chunked("multipart/mixed;boundary=" + boundary)
            for i in range(0, len(res), 1):
                self.chunk("\r\n--%s\r\nContent-Type: application/json\r\n\r\n%s" % (boundary, json.dumps(enc(res[i:i + 1]))))
            if cont:
                self.chunk("\r\n--%s\r\nContent-Type: application/json\r\n\r\n%s" % (boundary, json.dumps({"continuation": cont})))
            self.chunk("\r\n--%s--\r\n" % boundary)
            return self.end_chunked()
        out = enc(res)
        if cont:
            out["continuation"] = cont
        return self.send(200, json.dumps(out), "application/json")

    # ---- counters
    def counter(self, m, b, k, q, body):
        with LOCK:
            if m == "GET":
                if (b, k) not in COUNTERS:
                    return self.send(404, "not found\n")
                return self.send(200, str(COUNTERS[(b, k)]))
            if not props_of("default", b)["allow_mult"]:
                return self.send(409, "Counters require bucket property 'allow_mult=true'")
            COUNTERS[(b, k)] = COUNTERS.get((b, k), 0) + int(body)
            if q.get("returnvalue") == "true":
                return self.send(200, str(COUNTERS[(b, k)]))
            return self.send(204)


if __name__ == "__main__":
    srv = ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H)
    srv.daemon_threads = True
    print("stub listening on %s:%s" % (sys.argv[1], sys.argv[2]), flush=True)
    srv.serve_forever()
