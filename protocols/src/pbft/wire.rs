//! PBFT's messages, their canonical encoding, digests and authenticators.
//!
//! Every field of a signed body is a plain integer, string or vector: `postcard` encodes
//! such a value one way only, so two replicas that hold the same request compute the same
//! bytes, the same digest and the same authenticator. (The kernel's `KvOp`/`KvResult`
//! are shaped for JSON with serde tags; [`Operation`] and [`Outcome`] mirror them with
//! plain derives.)
//!
//! **Authenticators.** Each replica (and each node's client proxy) holds a secret derived
//! from the run's key and its identity. A message carries the sender's identity and a
//! keyed XXH3 hash of the canonical body under the sender's secret. Verification
//! recomputes it: in the simulation this stands for checking a signature with the
//! sender's public key. A Byzantine node's code only ever signs with its own secret, so
//! a message it forges under another identity fails verification, and honest nodes drop
//! and count it.

use std::fmt;

use serde::{Deserialize, Serialize};
use sim_core::linearizability::model::{KvOp, KvResult};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::raft::state_machine::Snapshot;

/// A sequence number (the first request is 1; 0 is the initial checkpoint).
pub type Seq = u64;
/// A view number; the primary of view `v` is replica `v mod n`.
pub type View = u64;

/// `KvOp` with plain derives, for canonical encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Get {
        key: String,
    },
    Put {
        key: String,
        value: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    Append {
        key: String,
        value: String,
    },
}

impl From<&KvOp> for Operation {
    fn from(op: &KvOp) -> Self {
        match op.clone() {
            KvOp::Get { key } => Operation::Get { key },
            KvOp::Put { key, value } => Operation::Put { key, value },
            KvOp::Cas { key, expected, new } => Operation::Cas { key, expected, new },
            KvOp::Append { key, value } => Operation::Append { key, value },
        }
    }
}

impl From<&Operation> for KvOp {
    fn from(op: &Operation) -> Self {
        match op.clone() {
            Operation::Get { key } => KvOp::Get { key },
            Operation::Put { key, value } => KvOp::Put { key, value },
            Operation::Cas { key, expected, new } => KvOp::Cas { key, expected, new },
            Operation::Append { key, value } => KvOp::Append { key, value },
        }
    }
}

/// `KvResult` with plain derives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Outcome {
    Get(Option<String>),
    Put,
    Cas(bool),
    Append,
}

impl From<&KvResult> for Outcome {
    fn from(r: &KvResult) -> Self {
        match r.clone() {
            KvResult::Get(v) => Outcome::Get(v),
            KvResult::Put => Outcome::Put,
            KvResult::Cas(b) => Outcome::Cas(b),
            KvResult::Append => Outcome::Append,
        }
    }
}

impl From<&Outcome> for KvResult {
    fn from(r: &Outcome) -> Self {
        match r.clone() {
            Outcome::Get(v) => KvResult::Get(v),
            Outcome::Put => KvResult::Put,
            Outcome::Cas(b) => KvResult::Cas(b),
            Outcome::Append => KvResult::Append,
        }
    }
}

/// A client request: the client is the proxy on node `proxy`, and the kernel's
/// operation id is its timestamp (unique in the run, so each is executed at most once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub proxy: u32,
    pub op: u64,
    pub operation: Operation,
}

/// What a sequence number holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Fills a gap in a new view.
    Null,
    /// A client request with its client's authenticator.
    Request { request: Request, sig: u64 },
}

/// A checkpoint's proof, a view-change set: printed as a count in traces.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Proof(pub Vec<Signed>);

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} signed>", self.0.len())
    }
}

/// A prepared certificate: a pre-prepare and 2f matching prepares from distinct backups.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedCert {
    pub pre_prepare: Signed,
    pub prepares: Vec<Signed>,
}

impl fmt::Debug for PreparedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pre_prepare.body {
            Body::PrePrepare {
                view, seq, digest, ..
            } => write!(
                f,
                "P(v{view} #{seq} {:04x} +{})",
                digest & 0xffff,
                self.prepares.len()
            ),
            _ => write!(f, "P(?)"),
        }
    }
}

/// A commit certificate: a pre-prepare and 2f+1 matching commits, shown to a replica
/// that missed the sequence number.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCert {
    pub pre_prepare: Signed,
    pub commits: Vec<Signed>,
}

impl fmt::Debug for CommitCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pre_prepare.body {
            Body::PrePrepare { view, seq, .. } => {
                write!(f, "C(v{view} #{seq} +{})", self.commits.len())
            }
            _ => write!(f, "C(?)"),
        }
    }
}

/// The signed part of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Client proxy → replica.
    Request {
        value: Value,
    },
    PrePrepare {
        view: View,
        seq: Seq,
        digest: u64,
        value: Value,
    },
    Prepare {
        view: View,
        seq: Seq,
        digest: u64,
    },
    Commit {
        view: View,
        seq: Seq,
        digest: u64,
    },
    /// Replica → client proxy.
    Reply {
        view: View,
        op: u64,
        outcome: Outcome,
    },
    Checkpoint {
        seq: Seq,
        state: u64,
    },
    ViewChange {
        view: View,
        stable: Seq,
        state: u64,
        proof: Proof,
        prepared: Vec<PreparedCert>,
    },
    NewView {
        view: View,
        view_changes: Proof,
        pre_prepares: Proof,
    },
    /// A replica that makes no progress asks for what it misses from `from` on.
    Fetch {
        from: Seq,
    },
    /// Ask the primary of `view` for its NEW-VIEW.
    FetchNewView {
        view: View,
    },
    /// Commit certificates for sequence numbers the asker missed.
    Certs {
        certs: Vec<CommitCert>,
    },
    /// State transfer: the state at a stable checkpoint with its proof.
    State {
        seq: Seq,
        state: u64,
        proof: Proof,
        snapshot: Snapshot,
    },
}

/// A message: its sender's identity, the body, and the sender's authenticator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub from: u32,
    pub body: Body,
    pub sig: u64,
}

/// The network message.
pub type Msg = Signed;

/// A node's secret: derived from the run's key and its identity (`client` for the
/// node's client proxy).
pub fn secret(key: u64, node: u32, client: bool) -> u64 {
    let mut bytes = node.to_le_bytes().to_vec();
    bytes.push(u8::from(client));
    bytes.extend_from_slice(b"pbft-secret");
    xxh3_64_with_seed(&bytes, key)
}

fn mac<T: Serialize>(secret: u64, from: u32, body: &T) -> u64 {
    let mut bytes = from.to_le_bytes().to_vec();
    match postcard::to_extend(body, bytes) {
        Ok(b) => bytes = b,
        Err(_) => return 0,
    }
    xxh3_64_with_seed(&bytes, secret)
}

impl Signed {
    /// Signs `body` as replica `from` with `secret`.
    pub fn new(secret: u64, from: u32, body: Body) -> Self {
        let sig = mac(secret, from, &body);
        Signed { from, body, sig }
    }

    /// Whether the authenticator is replica `from`'s over the body.
    pub fn verify(&self, key: u64) -> bool {
        self.sig == mac(secret(key, self.from, false), self.from, &self.body)
    }
}

/// Signs a client request as the proxy on node `request.proxy`.
pub fn sign_request(key: u64, request: Request) -> Value {
    let sig = mac(secret(key, request.proxy, true), request.proxy, &request);
    Value::Request { request, sig }
}

/// Whether a value is a null request or carries its client's authenticator.
pub fn value_authentic(key: u64, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Request { request, sig } => {
            *sig == mac(secret(key, request.proxy, true), request.proxy, request)
        }
    }
}

/// The digest of a value: XXH3 of its canonical encoding (the client's authenticator
/// excluded; a null request has a fixed digest).
pub fn digest(value: &Value) -> u64 {
    match value {
        Value::Null => xxh3_64(b"pbft-null-request"),
        Value::Request { request, .. } => {
            postcard::to_allocvec(request).map_or(0, |bytes| xxh3_64(&bytes))
        }
    }
}

/// The digest of a state machine snapshot (for checkpoints).
pub fn state_digest(snapshot: &Snapshot) -> u64 {
    postcard::to_allocvec(&snapshot.items).map_or(0, |bytes| xxh3_64(&bytes))
}
