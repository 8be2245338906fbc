//! Design notes: the construction, where each element lives, the wire format, and what the
//! security properties mean for a hospital. Documentation only; no code.

pub mod construction {
    //! # The construction: "RS-CP-ABE-RW13 / BLS12-381"
    //!
    //! Rebuilt from the published ancestors of Wei, Chen, Huang, Hu and Susilo's RS-HABE (IEEE
    //! TDSC), whose full text was not at hand: Rouselakis–Waters 2013 large-universe CP-ABE as the
    //! core; Boldyreva–Goyal–Kumar 2008 and Seo–Emura 2013 for tree-based revocation (KUNodes)
    //! with decryption-key-exposure resistance; Sahai–Seyalioglu–Waters 2012 for public
    //! ciphertext update; Bethencourt–Sahai–Waters 2007 for delegation; Lewko–Waters 2011 for the
    //! LSSS. The project's `shared/crypto/RS-HABE.md` §4 is the specification; each public
    //! function's documentation quotes its step.
    //!
    //! | algorithm | function | output |
    //! |---|---|---|
    //! | Setup | [`crate::setup`] | `PP`, `MSK = (α, k_PRF)`; `α_θ = PRF_k(θ)` per user-tree node |
    //! | KeyGen | [`crate::keygen`] | `(L+1)(2 + 2m)` G2: an independent RW13 key per path node |
    //! | Delegate | [`crate::delegate`] | same shape, subset of attributes, each node re-randomised on its own |
    //! | KeyUpdate | [`crate::key_update`] | `2 + 2(ℓ+1)` G2 per KUNode |
    //! | DKGen | [`crate::decrypt_key`] | `3 + 2m + 2(ℓ+1)` G2 |
    //! | Encrypt | [`crate::encrypt`] | `1 + 3n + 3c` G1 and 1 GT (`c` time rows) |
    //! | CTUpdate | [`crate::ct_update`] | same shape, chains extended to `Cover(t')` |
    //! | Decrypt | [`crate::decrypt`] | one multi-Miller loop over `3 + 2|I| + 2·chain` pairs |
    //!
    //! ## Where each element lives
    //!
    //! - **G1** (48 bytes, about half the cost of G2): everything numerous and updated often —
    //!   the ciphertext `C0` and all rows. The upstream server stores these and re-randomises them
    //!   every period.
    //! - **G2** (96 bytes): keys, key updates and decryption keys — few and long-lived. The G2 side
    //!   of every pairing comes from a key, so its `G2Prepared` line tables can be cached in the
    //!   decryption key.
    //! - **GT** (288 bytes compressed): `Y = e(g₁, g₂)^α` and the ciphertext's `C = m·Y^s`. `m` is a
    //!   random GT element and the data key is `HKDF-SHA256(m)`: because `CTUpdate` re-randomises
    //!   `s`, a bare KEM key `Y^s` would change at every update.
    //! - The public generators `g, w, v, u, h, u_T, h_T` exist in both groups with the same
    //!   discrete log (Setup draws the exponent and publishes both copies). No hash-to-curve is
    //!   needed: attributes are hashed to `Z_r` and enter as `u^{H(A)}·h`.
    //!
    //! ## Trees
    //!
    //! The user tree has depth `L` (one leaf per key holder); `KUNodes` covers the non-revoked
    //! leaves. The time tree has depth `ℓ` (one leaf per period); a ciphertext for period `t`
    //! carries an OR of chains over `Cover(t)`, the minimal set of nodes covering `[t, 2^ℓ)`. A
    //! decryption key for `t''` holds a row for every node of `Path(t'')`, so a chain is usable iff
    //! all its nodes are ancestors of `t''`, i.e. iff `t'' ≥ t`. `CTUpdate` AND-splits the last
    //! row of a chain to reach a node of the new cover, so chains grow: after continual updates
    //! with `ℓ = 10` there are on average 21.8 time rows (at most 36), against 6 for a fresh
    //! encryption; a periodic re-encryption resets them.
    //!
    //! ## Pitfalls avoided
    //!
    //! - Attributes are never hashed into a group as `g^{H(x)}` (the `rabe` break): `H` maps to
    //!   `Z_r` and the bases `u, h` have unknown discrete logs.
    //! - Attribute names are canonical (NFC, length-prefixed in the hash, quoted when needed in
    //!   formulas), so no two names collide; the time universe has its own domain tag.
    //! - Every AND gate splits its share additively: no single input of an AND receives the whole
    //!   share (the CIRCL TKN20 bug), checked by a test on the LSSS matrix.
    //! - A sub-authority never receives a raw `g₂^{α_θ}`: with the public key update it would
    //!   decrypt everything without any attribute. Delegation hands out re-randomised keys only.
    //! - No randomness is shared between the nodes of a key (below).
    //!
    //! ## The correction of 2026-12-02: one key per node
    //!
    //! The first version of RS-HABE.md §4, which this crate implemented faithfully until then,
    //! gave every node θ of a user's path `K0_θ = g₂^{α_θ}·w₂^{r}` with **one** `r` per user and
    //! one set of attribute rows. An outside audit broke it: node secrets differ by
    //! user-independent constants (`α_φ − α_root`), so for a revoked user A and any current user B,
    //! `K0_root(A) − K0_root(B) + K0_φ(B) = g₂^{α_φ}·w₂^{r_A}` is a key for B's current KUNode φ
    //! bound to A's attribute rows. One person holding an old revoked key and a re-issued one, or
    //! any holder of a sub-authority key, could do it; it opened data sealed after the revocation
    //! and data updated past it (45 of 45 attempts): backward and forward security both failed.
    //!
    //! Now every node θ has its own `r_θ`, its own `K1_θ = g₂^{r_θ}` and its own rows bound to
    //! `v₂^{−r_θ}`, as in BGK08 and Seo–Emura; `Delegate` re-randomises each node with its own
    //! `δ_θ`; `DKGen` uses the one node that the key update covers. A node's key moved between
    //! users no longer matches any attribute row of the receiver. What it costs: the key is
    //! `(L+1)` single-node keys (462 G2 elements, 44 KiB, at `L = 20` and 10 attributes, against
    //! 42 before), and `KeyGen` is about `L+1` times slower; `DKGen`, decryption and ciphertexts
    //! cost what they did. Long-term keys moved to format version 2, and version 1 keys are
    //! refused as [`crate::DecodeError::RetiredKeyLayout`]; an authority re-issues every key after
    //! rotating its node secrets ([`crate::MasterSecret::with_new_node_secrets`]), which keeps the
    //! public parameters and every stored ciphertext valid.
    //!
    //! Re-issuing a key to the same person (an attribute change) gives them a new leaf and
    //! revokes the old one; with per-node keys the two keys share no randomness, so pooling them
    //! is the collusion of two users and fails the same way (`model/linear_check.py`, scenario
    //! "revoked alice + current bob").
    //!
    //! The crate's tests now include the audit's attacks (`tests/attacks.rs`), each shown to open
    //! when its flaw is put back, and `model/linear_check.py` checks the algebra in exponent
    //! space: every scenario closed with its honest control opening, and the retired layout and
    //! "one node secret everywhere" (revocation switched off) both found broken.
}

pub mod security {
    //! # What the scheme claims, honestly
    //!
    //! Selectively secure (IND-sCPA) revocable-storage CP-ABE, designed after RW13 (selective,
    //! q-type assumption), BGK08/Seo–Emura (KUNodes, decryption-key-exposure resistance), SSW12
    //! (ciphertext delegation plus re-randomisation) and BSW07 (delegation); security is argued by
    //! analogy to published proofs for RW13-based revocable ABE, instantiated on type-3
    //! BLS12-381 under the asymmetric form of the assumption (plausible in the generic group
    //! model).
    //!
    //! - **No machine-checked or peer-reviewed proof exists for this exact composition.** Many EHR
    //!   and revocable ABE schemes in the literature were later broken, and so was the first
    //!   version of this one (see [`super::construction`], "The correction of 2026-12-02"). A
    //!   linear-attack check in the style of Venema–Alpár ("A Bunch of Broken Schemes", CT-RSA
    //!   2021) runs on every test run (`model/linear_check.py`): it rules out attacks that take
    //!   linear combinations of pairings of what the attackers hold, for the scenarios it lists
    //!   (collusion, pooled delegatees, revoked users alone and with current users, leaked
    //!   decryption keys against updated ciphertexts). It is a sanity check, not a proof.
    //! - IND-CPA KEM plus AEAD only, not CCA: ciphertexts must stay publicly re-randomisable for
    //!   `CTUpdate`, which Fujisaki–Okamoto style transforms forbid. Integrity comes from the AEAD
    //!   that uses the data key, with the resource, element and policy as associated data.
    //! - About 117–120 bits of classical security; not post-quantum.
    //! - `UpdateMode::Minimal` leaves `s` and the policy rows as they were; only
    //!   `UpdateMode::Rerandomize` gives SSW12's "distributed like a fresh encryption".
    //!
    //! # What the properties mean for a hospital
    //!
    //! - **Backward security** — a clinician revoked at period `p` (left, or changed role) gets no
    //!   decryption key for `p` or later, so records sealed after the revocation stay closed to
    //!   them, whatever keys they kept.
    //! - **Forward security** — once the gateway's background job has updated the stored
    //!   ciphertexts to a period after the revocation (`ct_update`, public, run against the cloud
    //!   copy), the revoked clinician's old decryption keys no longer open records sealed *before*
    //!   the revocation either. Until the job has run, a copy of an old key still opens the old
    //!   ciphertexts: run the job promptly after every revocation.
    //! - **Delegation** — the hospital's authority can hand a department a key narrowed to the
    //!   department's attributes; the department can narrow it again for a ward, never widen it,
    //!   and revoking the hospital-level leaf revokes everything below it.
    //! - **Decryption-key-exposure resistance** — a per-period decryption key stolen from a
    //!   gateway cache reveals nothing about the long-term key or other periods' keys: it expires
    //!   with its period (and with the ciphertext update).
    //! - **Collusion resistance** — a nurse and a clerk cannot pool their keys to open what needs
    //!   both of their attributes: each node key's rows are bound to its own randomness `r_θ`.
    //! - What it does **not** do on its own: authenticate. Encryption is public-key, so anyone
    //!   with the public parameters can make a ciphertext that opens to a data key of their
    //!   choosing; `fhirseal-envelope` binds what FHIRseal seals to a secret only the trusted zone
    //!   holds.
    //! - What it does **not** do: hide which access structure protects an element, hide access
    //!   patterns from the upstream server, or protect against a compromised gateway host (which
    //!   holds decryption keys on the users' behalf).
}

pub mod wire_format {
    //! # Wire format
    //!
    //! Every object starts with `version (u8) ‖ kind (u8) ‖ L (u8) ‖ ℓ (u8)`. The version is 1 for
    //! every kind but the secret key, which is 2 since the per-node layout; a version-1 secret key
    //! is refused as [`crate::DecodeError::RetiredKeyLayout`]. Kinds are 1
    //! public parameters, 2 master secret, 3 secret key, 4 key update, 5 decryption key, 6
    //! ciphertext. Integers are big-endian; G1/G2/GT elements are compressed (48/96/288 bytes);
    //! scalars are 32 bytes big-endian below `r`; strings are `u16` length ‖ UTF-8 (NFC); tree
    //! nodes are `depth (u8) ‖ bits (u64)`.
    //!
    //! | kind | body |
    //! |---|---|
    //! | public parameters | `g₁ w₁ v₁ u₁ h₁ u_T₁ h_T₁` (G1), the same in G2, `Y` (GT) |
    //! | master secret | `α` (scalar), `k_PRF` (32 bytes) |
    //! | secret key (v2) | leaf (u64), `u16` m, m × attribute, then for each of the L+1 path nodes, root first: `K1_θ K0_θ`, m × (`K_{θ,A,2} K_{θ,A,3}`) |
    //! | key update | period (u64), `u32` count, count × (node, `KU0`, `KU1`, (ℓ+1) × (G2, G2)) |
    //! | decryption key | period, `u16` m, m × attribute, `K0 K1 K1_T`, m × (`K2 K3`), (ℓ+1) × (G2, G2) |
    //! | ciphertext | period, policy (canonical text), `C` (GT), `C0`, n × (`C1 C2 C3`), `u8` chains, per chain `u8` length and length × (node, `C1 C2 C3`) |
    //!
    //! Decoding refuses: a truncated object, trailing bytes, an unknown version or another kind,
    //! a point off the curve or outside the prime-order subgroup (`from_compressed`), the identity
    //! anywhere a group element stands (the scheme never makes one), a scalar not
    //! below `r`, counts that cannot fit the input, unsorted or duplicate attributes or nodes, a
    //! non-NFC name, a policy that does not print back to the same text, and chains that do not
    //! end exactly at `Cover(period)` or do not descend one line of the time tree.
    //!
    //! Domain tags: [`crate::DST_ATTRIBUTE`] and [`crate::DST_TIME_NODE`] (RFC 9380 format);
    //! data key: `HKDF-SHA256(salt = "fhirseal rshabe v1", ikm = compressed m, info = "data key")`.
}

pub mod performance {
    //! # Where the time goes
    //!
    //! - **Encrypt**: per row five constant-time fixed-base multiplications in G1 (`w^λ`, `v^t`,
    //!   `u^{−H·t}`, `h^{−t}`, `g^t`) from 4-bit-window tables built once per process in the
    //!   public parameters (96 KiB each); `Y^s` from a constant-time GT table. `w^s` is computed
    //!   once for all time rows.
    //! - **Decrypt**: the G1 side is sums of ciphertext elements (Lewko–Waters coefficients are 1;
    //!   thresholds multiply by public Lagrange coefficients), then one `multi_miller_loop` over
    //!   cached `G2Prepared` tables and one final exponentiation.
    //! - **Keys**: constant-time fixed-base tables for `g₂, w₂, v₂` (built once per process) and,
    //!   inside a `key_update` with many KUNodes, for the period's time bases; the bases
    //!   `u₂^{H(A)}h₂` and `u_T₂^{H(τ)}h_T₂` are cached per attribute and time node in the public
    //!   parameters (bounded), saving one G2 multiplication per row.
    //! - Measured figures are in the repository's `BENCHMARKS.md`.
}
