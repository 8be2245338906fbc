#!/usr/bin/env python3
"""Group-element counts of the RS-HABE objects, computed by running the exponent-space model
(rsabe_model.py beside this file, RS-HABE.md §4 as corrected on 2026-12-02) at the reference depths
L = 20, ℓ = 10, period 700, for keys of 10 and 100 attributes and AND policies of the same size.

The crate's test `element_counts_agree_with_the_model_at_10_and_100_attributes` (tests/scheme.rs)
asserts the same numbers on the real objects; this script asserts them on the model and prints them,
so a change to either side shows up in `scripts/test`.
Usage: python3 crates/rshabe/model/counts.py
"""
import random
import sys

import rsabe_model as m

L, ELL, PERIOD = 20, 10, 700
EXPECTED = {  # m: (secret key G2, key update G2 per KUNode, decryption key G2, ciphertext G1 + 1 GT)
    10: (462, 24, 45, 46),
    100: (4242, 24, 225, 316),
}


def counts(n_attrs):
    pp, msk = m.setup(L, ELL)
    names = ['a%d' % i for i in range(n_attrs)]
    leaf = m.tbits(77, L)
    sk = m.keygen(pp, msk, leaf, names)
    sk_g2 = sum(2 + 2 * len(node['rows']) for node in sk['nodes'].values())
    ku = m.keyupdate(pp, msk, PERIOD, [])
    ku_g2 = [2 + 2 * len(node['rows']) for node in ku.values()]
    dk = m.dkgen(pp, sk, ku)
    dk_g2 = 3 + 2 * len(dk['rows']) + 2 * len(dk['rowsT'])
    policy = ('attr', names[0])
    for a in names[1:]:  # the model's LSSS takes binary gates
        policy = ('and', policy, ('attr', a))
    ct = m.encrypt(pp, policy, PERIOD)
    ct_g1 = 1 + 3 * len(ct['rows']) + 3 * sum(len(c) for c in ct['chains'].values())
    res = m.decrypt(pp, dk, ct)
    assert res is not None and res[0] == ct['key'], 'the model must decrypt its own ciphertext'
    assert len(ku_g2) == 1, 'no revocation: one KUNode, the root'
    return sk_g2, ku_g2[0], dk_g2, ct_g1


def main():
    random.seed(7)
    ok = True
    for n_attrs, expected in EXPECTED.items():
        got = counts(n_attrs)
        print('m = %3d: secret key %d G2, key update %d G2 per node, decryption key %d G2, '
              'ciphertext %d G1 + 1 GT' % ((n_attrs,) + got))
        if got != expected:
            print('  expected %r' % (expected,))
            ok = False
    print('model counts as expected' if ok else 'MODEL COUNTS DIFFER')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
