# Exponent-space correctness model only; not an implementation, no security.
# Vendored from shared/crypto/rsabe_model.py (RS-HABE.md §4 as corrected on 2026-12-02), with one
# fix: lw() placed an AND gate's -1 in the wrong column when its left child held another AND.
# Run: python3 rsabe_model.py
# Exponent-space simulation of the recommended RS-CP-ABE (RW13 core + KUNodes node-split +
# time-as-path-attributes with SSW12-style ciphertext delegation (AND-split) + key delegation).
# Group elements are represented by their discrete logs mod r; e(g1^a, g2^b) -> a*b mod r.
# Purpose: check the algebra (correctness of Decrypt after KeyGen/KeyUpdate/DKGen/Delegate/
# Encrypt/CTUpdate) and count group elements. NOT an implementation; no security.
import random, hashlib
R = 0x73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001
rnd = lambda: random.randrange(1, R)
def H(s):  # attribute string -> Z_r  (stand-in for RFC 9380 hash_to_field)
    return int.from_bytes(hashlib.sha256(s.encode()).digest(), 'big') % R

# ---------- LSSS (Lewko-Waters conversion for AND/OR trees) ----------
def lw(tree):
    """tree: ('attr',name) | ('and',l,r) | ('or',l,r). returns rows [(name, vec)] with target (1,0,..)"""
    rows = []; c = [1]
    def go(node, v):
        if node[0] == 'attr': rows.append((node[1], v)); return
        if node[0] == 'or': go(node[1], v); go(node[2], v); return
        # and: left gets v||1, right gets (0..0)||-1
        c[0] += 1; col = c[0]  # this gate's new column, fixed before the left subtree adds its own
        go(node[1], v + [0]*(col-1-len(v)) + [1])
        go(node[2], [0]*(col-1) + [R-1])
    go(tree, [1])
    m = c[0]
    return [(a, v + [0]*(m-len(v))) for a, v in rows], m

def recon(rows, attrs):
    """find w with sum w_i M_i = (1,0..0) over rows whose attr in attrs (Gaussian elim mod R)"""
    idx = [i for i,(a,_) in enumerate(rows) if a in attrs]
    if not idx: return None
    m = len(rows[0][1])
    # solve M_I^T w = e1
    A = [[rows[i][1][j] % R for i in idx] + [1 if j == 0 else 0] for j in range(m)]
    n = len(idx); piv = []; rr = 0
    for col in range(n):
        p = next((k for k in range(rr, m) if A[k][col]), None)
        if p is None: continue
        A[rr], A[p] = A[p], A[rr]
        inv = pow(A[rr][col], R-2, R)
        A[rr] = [x*inv % R for x in A[rr]]
        for k in range(m):
            if k != rr and A[k][col]:
                f = A[k][col]; A[k] = [(x - f*y) % R for x, y in zip(A[k], A[rr])]
        piv.append(col); rr += 1
    if any(A[k][n] for k in range(rr, m)): return None
    w = [0]*n
    for k, col in enumerate(piv): w[col] = A[k][n]
    return {idx[i]: w[i] for i in range(n) if w[i]}

# ---------- binary trees ----------
def path(leaf, depth):  # node labels as bit strings, root = ''
    return [leaf[:k] for k in range(depth+1)]
def kunodes(depth, revoked_leaves):
    X = set()
    for lf in revoked_leaves: X.update(path(lf, depth))
    Y = set()
    for x in X:
        if len(x) < depth:
            for ch in (x+'0', x+'1'):
                if ch not in X: Y.add(ch)
    return Y if X else {''}
def tbits(t, l): return format(t, '0%db' % l)
def cover(t, l):  # minimal set of time-tree nodes covering [t, 2^l - 1]
    b = tbits(t, l)
    return [b[:k] + '1' for k in range(l) if b[k] == '0'] + [b]

# ---------- scheme ----------
class PP: pass
def setup(L, l):
    pp = PP(); pp.L, pp.l = L, l
    pp.w, pp.v, pp.u, pp.h, pp.uT, pp.hT = (rnd() for _ in range(6))   # same dlogs in G1 and G2
    alpha = rnd(); pp.egg_alpha = alpha  # e(g1,g2)^alpha (exponent)
    node_secret = {}
    def a_theta(theta):  # in practice PRF_k(theta)
        if theta not in node_secret: node_secret[theta] = rnd()
        return node_secret[theta]
    return pp, (alpha, a_theta)

def F(pp, A, time=False):  # exponent of u^A h (user universe) / uT^A hT (time universe)
    return ((pp.uT if time else pp.u) * H(A) + (pp.hT if time else pp.h)) % R

def keygen(pp, msk, leaf, S):
    # An independent RW13 key per path node: its own r_theta and its own attribute rows. (The first version of this model
    # shared one r across the nodes; that lets a revoked user move a current user's node components onto its own key:
    # see RS-HABE.md, "Correction", and audit/audit_linear_attack.py.)
    alpha, a_theta = msk; nodes = {}
    for th in path(leaf, pp.L):
        r = rnd(); rows = {}
        for A in S:
            rt = rnd(); rows[A] = (rt, (F(pp, A)*rt - pp.v*r) % R)      # (g2^rt, (u^A h)^rt v^-r)
        nodes[th] = {'K0': (a_theta(th) + pp.w*r) % R, 'K1': r, 'rows': rows}
    return {'leaf': leaf, 'nodes': nodes}

def keyupdate(pp, msk, t, revoked):
    alpha, a_theta = msk; ku = {}
    for th in kunodes(pp.L, revoked):
        r2 = rnd(); rows = {}
        for node in path(tbits(t, pp.l), pp.l):
            rt = rnd(); rows['t:'+node] = (rt, (F(pp, 't:'+node, True)*rt - pp.v*r2) % R)
        ku[th] = {'K0': (alpha - a_theta(th) + pp.w*r2) % R, 'K1': r2, 'rows': rows}
    return ku

def rerand_rows(pp, rows, dr, time=False):
    out = {}
    for A, (a, b) in rows.items():
        d = rnd(); out[A] = ((a + d) % R, (b + F(pp, A, time)*d - pp.v*dr) % R)
    return out

def dkgen(pp, sk, ku):  # DK_{ID,t}: node theta in Path(ID) ∩ KUNodes, from that node's key only, re-randomized (DKER)
    th = next((x for x in path(sk['leaf'], pp.L) if x in ku), None)
    if th is None: return None  # revoked
    node = sk['nodes'][th]; d1, d2 = rnd(), rnd()
    return {'K0': (node['K0'] + ku[th]['K0'] + pp.w*(d1+d2)) % R,
            'K1': (node['K1'] + d1) % R, 'rows': rerand_rows(pp, node['rows'], d1),
            'K1T': (ku[th]['K1'] + d2) % R, 'rowsT': rerand_rows(pp, ku[th]['rows'], d2, True)}

def delegate(pp, sk, Ssub):  # hierarchical delegation: subset + independent re-randomization per node (public ops only)
    nodes = {}
    for th, node in sk['nodes'].items():
        d = rnd()
        nodes[th] = {'K0': (node['K0'] + pp.w*d) % R, 'K1': (node['K1'] + d) % R,
                     'rows': rerand_rows(pp, {A: node['rows'][A] for A in Ssub}, d)}
    return {'leaf': sk['leaf'], 'nodes': nodes}

def enc_rows(pp, rows, m, s, time=False):
    y = [s] + [rnd() for _ in range(m-1)]
    out = []
    for A, vec in rows:
        lam = sum(a*b for a, b in zip(vec, y)) % R; t = rnd()
        out.append([A, (pp.w*lam + pp.v*t) % R, (-F(pp, A, time)*t) % R, t])   # 3 x G1
    return out

def time_policy_rows(t, l):
    # OR over cover nodes; each branch is a chain (AND) — fresh: chain length 1
    return [[('t:'+tau,)] for tau in cover(t, l)]

def encrypt(pp, tree, t):
    s = rnd(); rows, m = lw(tree)
    ct = {'t': t, 'C0': s, 'key': pp.egg_alpha * s % R, 'm': m, 'rowsM': [v for _, v in rows],
          'rows': enc_rows(pp, rows, m, s)}
    # time part: OR of chains. Represent each chain as list of rows with shares summing to s.
    ct['chains'] = {}
    for tau in cover(t, pp.l):
        tt = rnd()
        ct['chains'][tau] = [['t:'+tau, (pp.w*s + pp.v*tt) % R, (-F(pp, 't:'+tau, True)*tt) % R, tt]]
    return ct

def ctupdate(pp, ct, t_new):
    """public: delegate OR-of-chains from cover(t) to cover(t_new) by AND-splitting, then re-randomize s."""
    old = ct['chains']; new = {}
    for tau in cover(t_new, pp.l):
        anc = next(a for a in old if tau.startswith(a))
        chain = [row[:] for row in old[anc]]
        if anc != tau:  # AND-split the last row: share λ -> (λ - z) on old row, z on new row
            z = rnd(); tt = rnd()
            chain[-1][1] = (chain[-1][1] - pp.w*z) % R
            chain.append(['t:'+tau, (pp.w*z + pp.v*tt) % R, (-F(pp, 't:'+tau, True)*tt) % R, tt])
        new[tau] = chain
    # re-randomize: s -> s + s2 (fresh encryption of 0-offset under the new policy, public values only)
    s2 = rnd(); ct = dict(ct); ct['C0'] = (ct['C0'] + s2) % R; ct['key'] = (ct['key'] + pp.egg_alpha*s2) % R
    y = [s2] + [rnd() for _ in range(ct['m']-1)]
    rows = []
    for (A, c1, c2, c3), vec in zip(ct['rows'], ct['rowsM']):
        lam = sum(a*b for a, b in zip(vec, y)) % R; d = rnd()
        rows.append([A, (c1 + pp.w*lam + pp.v*d) % R, (c2 - F(pp, A)*d) % R, (c3 + d) % R])
    ct['rows'] = rows
    for tau, chain in new.items():   # fresh additive shares of s2 along each chain (AND)
        shares = [rnd() for _ in chain[:-1]]; shares.append((s2 - sum(shares)) % R)
        for row, sh in zip(chain, shares):
            d = rnd(); A = row[0]
            row[1] = (row[1] + pp.w*sh + pp.v*d) % R; row[2] = (row[2] - F(pp, A, True)*d) % R; row[3] = (row[3] + d) % R
    ct['chains'] = new; ct['t'] = t_new
    return ct

def decrypt(pp, dk, ct):
    rowsL = [(r[0], v) for r, v in zip(ct['rows'], ct['rowsM'])]
    w = recon(rowsL, set(dk['rows']))
    if w is None: return None
    tpath = set(dk['rowsT'])
    chain = next((c for c in ct['chains'].values() if all(r[0] in tpath for r in c)), None)
    if chain is None: return None
    pairs = 0
    num = ct['C0'] * dk['K0']; pairs += 1                                   # e(C0, K0)
    den = 0
    # ABE part: e(prod C1^w, K1) * prod e(C2^w, K_tau2) e(C3^w, K_tau3)
    den += sum(w[i]*ct['rows'][i][1] for i in w) * dk['K1']; pairs += 1
    for i, wi in w.items():
        A, c1, c2, c3 = ct['rows'][i]; k2, k3 = dk['rows'][A]
        den += wi*(c2*k2 + c3*k3); pairs += 2
    # time part (all rows of one chain, coefficients 1)
    den += sum(r[1] for r in chain) * dk['K1T']; pairs += 1
    for A, c1, c2, c3 in chain:
        k2, k3 = dk['rowsT'][A]; den += c2*k2 + c3*k3; pairs += 2
    return (num - den) % R, pairs

def test():
    random.seed(1)
    L, l = 6, 5
    pp, msk = setup(L, l)
    alice = keygen(pp, msk, '000001', ['role:physician', 'dept:cardio', 'org:h1'])
    bob = keygen(pp, msk, '101100', ['role:nurse', 'dept:cardio', 'org:h1'])
    intern = delegate(pp, alice, ['dept:cardio', 'org:h1', 'role:physician'])
    pol = ('and', ('or', ('attr', 'role:physician'), ('attr', 'role:nurse')),
                  ('and', ('attr', 'dept:cardio'), ('attr', 'org:h1')))
    ok = 0
    for t0 in [0, 3, 7]:
        ct = encrypt(pp, pol, t0)
        for t in range(t0, 2**l):
            if t > t0: ct = ctupdate(pp, ct, t)
            revoked = ['101100'] if t >= 12 else []
            ku = keyupdate(pp, msk, t, revoked)
            for who, sk in [('alice', alice), ('bob', bob), ('intern', intern)]:
                dk = dkgen(pp, sk, ku)
                if dk is None:
                    assert who == 'bob' and t >= 12; continue
                res = decrypt(pp, dk, ct)
                assert res is not None and res[0] == ct['key'], (who, t0, t)
                ok += 1
                # old DK (time t-1) must not match an updated ciphertext at time t:
            if t > t0:
                ku_old = keyupdate(pp, msk, t-1, [])
                dk_old = dkgen(pp, alice, ku_old)
                assert decrypt(pp, dk_old, ct) is None  # no cover node on path(t-1)
        nrows = sum(len(c) for c in ct['chains'].values())
        print('t0=%d -> t=%d: policy rows=%d, time rows after updates=%d (fresh would be %d)' % (
            t0, 2**l-1, len(ct['rows']), nrows, len(cover(2**l-1, l))))
    print('decryptions ok:', ok)

def chain_stats(l):
    # worst/avg number of time rows and max chain length when updating from t=0 every period
    import statistics
    pp = PP(); pp.l = l; pp.w=pp.v=pp.uT=pp.hT=pp.u=pp.h=1; pp.egg_alpha=1
    ct = {'chains': {tau: [['t:'+tau,0,0,0]] for tau in cover(0, l)}}
    sizes=[]; maxchain=[]
    for t in range(1, 2**l):
        old = ct['chains']; new = {}
        for tau in cover(t, l):
            anc = next(a for a in old if tau.startswith(a)); chain = [r[:] for r in old[anc]]
            if anc != tau: chain.append(['t:'+tau,0,0,0])
            new[tau] = chain
        ct['chains'] = new
        sizes.append(sum(len(c) for c in new.values())); maxchain.append(max(len(c) for c in new.values()))
    fresh = [len(cover(t, l)) for t in range(2**l)]
    print('l=%d: time rows after continual updates: mean %.1f max %d; max chain %d; fresh cover mean %.1f max %d' % (
        l, statistics.mean(sizes), max(sizes), max(maxchain), statistics.mean(fresh), max(fresh)))

if __name__ == '__main__':
    test()
    for l in (8, 10, 12): chain_stats(l)
