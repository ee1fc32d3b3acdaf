"""RFC 9420 test vectors for suites no official file covers (X-Wing 0x004D), made by our own code.

    python -m interop.generate [--suite 77] [--out tests/data/xwing/self-generated]

Writes ``crypto-basics.json`` and ``welcome.json`` in the official formats
(github.com/mlswg/mls-implementations, test-vectors.md), so the same checkers
read them.  They are **self-generated**: they prove only that our code keeps
giving the same answers (a regression check) and give another stack something
to compare with; they are not evidence of correctness the way the official
files are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlscore.credentials import Credential
from mlscore.crypto import XWING_SUITE, get_suite
from mlscore.framing import MLSMessage
from mlscore.group import Group
from mlscore.key_package import create_key_package
from mlscore.messages import Add

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "xwing" / "self-generated"


def crypto_basics(suite_id: int) -> dict:
    suite = get_suite(suite_id)
    r = os.urandom
    secret, context, value, content, plaintext = r(suite.hash_len), r(32), r(32), r(32), r(32)
    priv, pub = suite.generate_signature_key_pair()
    hpke_priv, hpke_pub = suite.generate_hpke_key_pair()
    kem_output, ciphertext = suite.encrypt_with_label(hpke_pub, "EncryptWithLabel", context, plaintext)
    generation = int.from_bytes(r(4), "big")
    return {
        "cipher_suite": suite_id,
        "ref_hash": {"label": "RefHash", "value": value.hex(), "out": suite.ref_hash("RefHash", value).hex()},
        "expand_with_label": {"secret": secret.hex(), "label": "ExpandWithLabel", "context": context.hex(),
                              "length": 16,
                              "out": suite.expand_with_label(secret, "ExpandWithLabel", context, 16).hex()},
        "derive_secret": {"secret": secret.hex(), "label": "DeriveSecret",
                          "out": suite.derive_secret(secret, "DeriveSecret").hex()},
        "derive_tree_secret": {"secret": secret.hex(), "label": "DeriveTreeSecret", "generation": generation,
                               "length": 32, "out": suite.derive_tree_secret(secret, "DeriveTreeSecret",
                                                                             generation, 32).hex()},
        "sign_with_label": {"priv": priv.hex(), "pub": pub.hex(), "content": content.hex(), "label": "SignWithLabel",
                            "signature": suite.sign_with_label(priv, "SignWithLabel", content).hex()},
        "encrypt_with_label": {"priv": hpke_priv.hex(), "pub": hpke_pub.hex(), "label": "EncryptWithLabel",
                               "context": context.hex(), "plaintext": plaintext.hex(),
                               "kem_output": kem_output.hex(), "ciphertext": ciphertext.hex()},
    }


def welcome(suite_id: int) -> dict:
    suite = get_suite(suite_id)
    alice_priv, alice_pub = suite.generate_signature_key_pair()
    alice = Group.create(create_key_package(suite_id, Credential.basic(b"alice"), alice_priv))
    bob = create_key_package(suite_id, Credential.basic(b"bob"), suite.generate_signature_key_pair()[0])
    result = alice.commit([Add(bob.key_package)], force_path=False)
    assert result.welcome is not None
    return {"cipher_suite": suite_id, "init_priv": bob.init_priv.hex(), "signer_pub": alice_pub.hex(),
            "key_package": MLSMessage(bob.key_package).to_bytes().hex(), "welcome": result.welcome.to_bytes().hex()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=int, default=XWING_SUITE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, make in (("crypto-basics", crypto_basics), ("welcome", welcome)):
        path = args.out / f"{name}.json"
        path.write_text(json.dumps([make(args.suite)], indent=1) + "\n")
        print(f"wrote {path} (self-generated, suite {args.suite:#06x})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
