"""crypto-basics.json: labelled hashing, KDF, signatures and HPKE per suite."""

from __future__ import annotations

from mlscore.crypto import get_suite


def check(entry: dict) -> None:
    suite = get_suite(entry["cipher_suite"])
    h = bytes.fromhex

    v = entry["ref_hash"]
    assert suite.ref_hash(v["label"], h(v["value"])) == h(v["out"]), "ref_hash"

    v = entry["expand_with_label"]
    out = suite.expand_with_label(h(v["secret"]), v["label"], h(v["context"]), v["length"])
    assert out == h(v["out"]), "expand_with_label"

    v = entry["derive_secret"]
    assert suite.derive_secret(h(v["secret"]), v["label"]) == h(v["out"]), "derive_secret"

    v = entry["derive_tree_secret"]
    out = suite.derive_tree_secret(h(v["secret"]), v["label"], v["generation"], v["length"])
    assert out == h(v["out"]), "derive_tree_secret"

    v = entry["sign_with_label"]
    suite.verify_with_label(h(v["pub"]), v["label"], h(v["content"]), h(v["signature"]))
    assert suite.signature_public_key(h(v["priv"])) == h(v["pub"]), "signature public key"
    own = suite.sign_with_label(h(v["priv"]), v["label"], h(v["content"]))
    suite.verify_with_label(h(v["pub"]), v["label"], h(v["content"]), own)

    v = entry["encrypt_with_label"]
    plaintext = suite.decrypt_with_label(h(v["priv"]), v["label"], h(v["context"]), h(v["kem_output"]),
                                         h(v["ciphertext"]))
    assert plaintext == h(v["plaintext"]), "decrypt_with_label"
    kem_output, ciphertext = suite.encrypt_with_label(h(v["pub"]), v["label"], h(v["context"]), plaintext)
    assert suite.decrypt_with_label(h(v["priv"]), v["label"], h(v["context"]), kem_output,
                                    ciphertext) == plaintext
    assert suite.hpke_public_key(h(v["priv"])) == h(v["pub"]), "hpke public key"
