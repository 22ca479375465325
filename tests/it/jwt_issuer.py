# A stand-in for the OpenFaaS gateway's token issuer, for tests/it/jwt.rs and bench/run:
# an OpenID configuration, a JWKS (whose fetches it counts), and /_sign, which mints
# tokens with PyJWT. Usage: jwt_issuer.py PORT [DELAY_SECONDS]
# POST /_slow makes later JWKS answers trickle (one byte a second, for a minute); /_count
# tells how many JWKS fetches began ("jwks") and how many trickling ones are still being
# sent ("trickling").
import base64, hashlib, hmac, json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

port = int(sys.argv[1])
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
ISS = "http://127.0.0.1:%d" % port

keys = {
    "rsa1": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ec1": ("ES256", ec.generate_private_key(ec.SECP256R1())),
    "ec384": ("ES384", ec.generate_private_key(ec.SECP384R1())),
    "ed1": ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    "rsa2": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    "ghost": ("RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}
published = ["rsa1", "ec1", "ec384", "ed1"]
fetches = {"jwks": 0, "config": 0, "trickling": 0}
slow = {"on": False}
lock = threading.Lock()


def jwk(kid):
    alg, priv = keys[kid]
    pub = priv.public_key()
    if alg == "EdDSA":
        d = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(pub))
    elif alg in ("ES256", "ES384"):
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
    else:
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
    d.update({"kid": kid, "use": "sig"})
    return d


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(req):
    now = int(time.time())
    claims = {
        "iss": ISS,
        "aud": [ISS],
        "sub": "test-client",
        "iat": now,
        "exp": now + 300,
        "function": {"permissions": ["ns1:fn1"], "audience": []},
    }
    for k, v in req.get("claims", {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    kid = req.get("kid", "rsa1")
    alg = req.get("alg")
    if alg == "none":
        head = {"alg": "none", "typ": "JWT", "kid": kid}
        return b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode()) + "."
    if alg == "HS256-confusion":
        # The attack: HMAC over the token with the RSA public key (PEM) as the secret.
        pem = keys[kid][1].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head = {"alg": "HS256", "typ": "JWT", "kid": kid}
        msg = b64(json.dumps(head).encode()) + "." + b64(json.dumps(claims).encode())
        return msg + "." + b64(hmac.new(pem, msg.encode(), hashlib.sha256).digest())
    signer = req.get("signer", kid)
    key_alg, priv = keys[signer]
    return jwt.encode(claims, priv, algorithm=alg or key_alg, headers={"kid": kid})


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def trickle(self, data):
        with lock:
            fetches["trickling"] += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.flush()
            for b in data[:60]:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass
        finally:
            with lock:
                fetches["trickling"] -= 1
        self.close_connection = True

    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            with lock:
                fetches["config"] += 1
            self.reply(200, json.dumps({"issuer": ISS, "jwks_uri": ISS + "/.well-known/jwks.json"}))
        elif self.path == "/.well-known/jwks.json":
            with lock:
                fetches["jwks"] += 1
                body = json.dumps({"keys": [jwk(k) for k in published]})
                trickle = slow["on"]
            if trickle:
                self.trickle(body.encode())
            else:
                self.reply(200, body)
        elif self.path == "/_count":
            with lock:
                self.reply(200, json.dumps(fetches))
        else:
            self.reply(404, "{}")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        req = json.loads(self.rfile.read(n) or b"{}")
        if self.path == "/_sign":
            self.reply(200, sign(req), "text/plain")
        elif self.path == "/_slow":
            with lock:
                slow["on"] = True
            self.reply(200, "{}")
        elif self.path == "/_publish":
            with lock:
                published.append(req["kid"])
            self.reply(200, "{}")
        elif self.path == "/_unpublish":
            with lock:
                published.remove(req["kid"])
            self.reply(200, "{}")
        else:
            self.reply(404, "{}")


time.sleep(delay)
srv = ThreadingHTTPServer(("127.0.0.1", port), H)
print("issuer listening", flush=True)
srv.serve_forever()
