use super::*;
use crate::SqliteStore;
use sha2::{Digest, Sha256};

/// A chain in a fresh SQLite file, with a fixed checkpoint key, and the folder that holds it.
fn chain(policy: CheckpointPolicy) -> (AuditChain, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("a.sqlite3")).unwrap();
    store.migrate().unwrap();
    let signer = CheckpointSigner::from_seed(&[7; 32]).unwrap();
    (AuditChain::new(Box::new(store), signer, policy), dir)
}

fn entry(time: i64, record: &str) -> AuditEntry<'_> {
    AuditEntry { time, record }
}

/// The encoding is length-prefixed and covers every field: moving bytes between the time and
/// the line, or changing any field, changes the hash.
#[test]
fn every_field_is_bound_into_the_hash() {
    let h = link_hash(1, 1000, &GENESIS, "{}");
    assert_ne!(h, link_hash(2, 1000, &GENESIS, "{}"));
    assert_ne!(h, link_hash(1, 1001, &GENESIS, "{}"));
    assert_ne!(h, link_hash(1, 1000, &[1; 32], "{}"));
    assert_ne!(h, link_hash(1, 1000, &GENESIS, "{ }"));
    // A fixed answer, so the encoding cannot drift without this test changing.
    let mut manual = Sha256::new();
    for field in [
        CHAIN_DST,
        &1u64.to_be_bytes(),
        &1000i64.to_be_bytes(),
        &GENESIS,
        b"{}",
    ] {
        manual.update((field.len() as u64).to_be_bytes());
        manual.update(field);
    }
    assert_eq!(h, <[u8; 32]>::from(manual.finalize()));
    let tail = ChainTail {
        seq: 1,
        hash: h,
        time: 5,
    };
    assert_eq!(
        checkpoint_message(&tail).len(),
        8 + CHECKPOINT_DST.len() + 8 + 8 + 8 + 32 + 8 + 8
    );
}

#[test]
fn checkpoint_policy_is_bounded() {
    assert!(CheckpointPolicy::new(0, 60).is_err());
    assert!(CheckpointPolicy::new(1_000_001, 60).is_err());
    assert!(CheckpointPolicy::new(10, 0).is_err());
    assert!(CheckpointPolicy::new(10, 86_401).is_err());
    let p = CheckpointPolicy::new(10, 60).unwrap();
    let at = |seq, time| ChainTail {
        seq,
        hash: GENESIS,
        time,
    };
    assert!(p.due(&at(1, 0), None));
    assert!(!p.due(&at(0, 0), None));
    assert!(!p.due(&at(9, 1000), Some(&at(1, 0))));
    assert!(p.due(&at(11, 1000), Some(&at(1, 0))));
    assert!(p.due(&at(2, 60_000), Some(&at(1, 0))));
    assert!(!p.due(&at(1, 120_000), Some(&at(1, 0))));
}

#[test]
fn appends_link_and_verify_with_checkpoints() {
    let (mut chain, _dir) = chain(CheckpointPolicy::new(3, 3600).unwrap());
    for i in 0..10 {
        let line = format!("{{\"n\":{i}}}");
        let tail = chain.append(&[entry(1000 + i, &line)]).unwrap();
        assert_eq!(tail.seq, i as u64 + 1);
    }
    let tail = chain
        .append(&[entry(2000, "{\"a\":1}"), entry(2001, "{\"b\":2}")])
        .unwrap();
    assert_eq!(tail.seq, 12);
    let key = chain.public_key();
    let intact = verify(chain.store.as_mut(), &key, &[]).unwrap();
    assert_eq!(intact.records, 12);
    // Records 1 (the first), then 4, 7 and 10 (every 3); 12 is 2 past 10: none yet.
    assert_eq!(intact.last_checkpoint, Some(10));
    assert_eq!(intact.checkpoints, 4);
    let again = chain.checkpoint().unwrap();
    assert_eq!(again.seq, 12);
    let intact = verify(chain.store.as_mut(), &key, &[]).unwrap();
    assert_eq!((intact.checkpoints, intact.last_checkpoint), (5, Some(12)));
    chain.checkpoint().unwrap();
    assert_eq!(
        verify(chain.store.as_mut(), &key, &[]).unwrap().checkpoints,
        5
    );

    let all = records(chain.store.as_mut(), 0, 100).unwrap();
    assert_eq!(all.len(), 12);
    assert_eq!(all[10].record, "{\"a\":1}");
    assert_eq!(all[0].prev, GENESIS);
    assert!(all.windows(2).all(|w| w[1].prev == w[0].hash));
}

/// Another key (a checkpoint forged by someone without the authority's) fails, naming the
/// first checkpointed record.
#[test]
fn a_wrong_public_key_fails_at_the_first_checkpoint() {
    let (mut chain, _dir) = chain(CheckpointPolicy::DEFAULT);
    chain.append(&[entry(1, "{}"), entry(2, "{}")]).unwrap();
    let other = CheckpointSigner::from_seed(&[8; 32]).unwrap().public_key();
    let err = verify(chain.store.as_mut(), &other, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuditTampered {
                seq: 2,
                problem: Tamper::BadSignature
            }
        ),
        "{err}"
    );
}

/// An expected checkpoint copied out of the database binds the chain: a chain rewritten (here:
/// a fresh one with other content) fails at that record, and one that ends before it is
/// truncated.
#[test]
fn expected_checkpoints_bind_the_chain() {
    let (mut chain, _dir) = chain(CheckpointPolicy::DEFAULT);
    let tail = chain
        .append(&[entry(1, "{\"x\":1}"), entry(2, "{}")])
        .unwrap();
    let key = chain.public_key();
    assert!(verify(chain.store.as_mut(), &key, &[(2, tail.hash)]).is_ok());
    let err = verify(chain.store.as_mut(), &key, &[(2, [9; 32])]).unwrap_err();
    assert!(matches!(
        err,
        Error::AuditTampered {
            seq: 2,
            problem: Tamper::ExpectedMismatch
        }
    ));
    let err = verify(chain.store.as_mut(), &key, &[(5, [9; 32])]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::AuditTampered {
                seq: 3,
                problem: Tamper::Truncated { checkpoint: 5 }
            }
        ),
        "{err}"
    );
}

#[test]
fn hex_round_trips() {
    let bytes = [0xab; 32];
    assert_eq!(from_hex(&hex(&bytes)), Some(bytes));
    assert_eq!(from_hex("zz"), None);
    assert_eq!(from_hex(&"é".repeat(32)), None);
}
