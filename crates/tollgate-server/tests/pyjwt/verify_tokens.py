"""Verifies Tollgate license tokens with PyJWT, a JWT library nobody here wrote.

usage: verify_tokens.py JWKS_URL AUDIENCE ISSUER TOKEN...

Loads the server's JWKS, verifies every token (EdDSA only) and prints one JSON line
per token: {"kid", "sub", "jti"}. Also checks that PyJWT refuses a tampered token.
Exits non-zero on any failure.
"""
import json
import sys
import urllib.request

import jwt
from jwt import PyJWKSet


def main() -> int:
    jwks_url, audience, issuer, *tokens = sys.argv[1:]
    with urllib.request.urlopen(jwks_url) as res:
        jwks = PyJWKSet.from_json(res.read().decode())
    keys = {k.key_id: k for k in jwks.keys}
    for token in tokens:
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "EdDSA", header
        key = keys[header["kid"]]
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["EdDSA"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "nbf", "sub", "jti", "aud", "iss"]},
        )
        assert "license" in claims and claims["license"]["status"] == "active", claims
        head, payload, sig = token.split(".")
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        try:
            jwt.decode(f"{head}.{payload}.{flipped}", key.key, algorithms=["EdDSA"], audience=audience)
        except jwt.InvalidSignatureError:
            pass
        else:
            raise AssertionError("PyJWT accepted a tampered signature")
        print(json.dumps({"kid": header["kid"], "sub": claims["sub"], "jti": claims["jti"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
