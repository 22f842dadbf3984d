//! The Merkle tree that lets one signature cover a whole batch while each member can
//! still be proven on its own: the receiver's receipts ([`crate::receipt`]) and the
//! sender's batch signature over the envelopes it relays ([`crate::envelope_batch`]) both
//! sign the root of a tree over their batch, and each member keeps its [`BatchProof`]
//! (its position and the sibling hashes from its leaf up to the root). One
//! implementation, so the two proofs cannot drift apart.
//!
//! The tree follows RFC 6962's domain separation (leaf hashes start with 0x00, node
//! hashes with 0x01), so a node can never be passed off as a leaf; a level with an odd
//! number of nodes carries its last node up unchanged. What goes into a leaf (after the
//! 0x00) is the caller's, with a label of its own, so a receipt leaf can never be taken
//! for an envelope leaf.

use ring::digest;
use serde::{Deserialize, Serialize};

/// A SHA-256 hash: a leaf, a node or a root.
pub type Hash = [u8; 32];

/// A member's place in a signed batch: the batch size, its position, and the sibling
/// hashes (hex) from its leaf up to the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchProof {
    pub size: u32,
    pub index: u32,
    pub path: Vec<String>,
}

/// Why a path does not lead anywhere: the proof is malformed. The messages read after
/// "the receipt's" or "the envelope's".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("batch position is outside its batch")]
    OutsideBatch,
    #[error("batch path is too short")]
    TooShort,
    #[error("batch path is too long")]
    TooLong,
    #[error("batch path is not 32-byte hex")]
    NotHex,
}

/// SHA-256 over the concatenation of `parts`.
pub fn hash_parts(parts: &[&[u8]]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A leaf: 0x00, then the caller's labelled content.
pub fn leaf(parts: &[&[u8]]) -> Hash {
    let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
    all.push(&[0x00]);
    all.extend_from_slice(parts);
    hash_parts(&all)
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    hash_parts(&[&[0x01], left, right])
}

/// The root of the tree over `leaves`, and each leaf's path of sibling hashes.
pub fn tree(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    let mut paths = vec![Vec::new(); leaves.len()];
    // positions[i]: where leaf i's ancestor sits in the current level.
    let mut positions: Vec<usize> = (0..leaves.len()).collect();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        for (leaf, pos) in positions.iter_mut().enumerate() {
            let sibling = *pos ^ 1;
            if sibling < level.len() {
                paths[leaf].push(level[sibling]);
            }
            *pos /= 2;
        }
        level = level
            .chunks(2)
            .filter_map(|pair| match pair {
                [l, r] => Some(node_hash(l, r)),
                [only] => Some(*only),
                _ => None,
            })
            .collect();
    }
    (level.first().copied().unwrap_or([0; 32]), paths)
}

/// The proofs of a tree's leaves, as they are stored and travel (hex paths).
pub fn proofs(paths: Vec<Vec<Hash>>) -> Vec<BatchProof> {
    let size = paths.len() as u32;
    paths
        .into_iter()
        .enumerate()
        .map(|(index, path)| BatchProof {
            size,
            index: index as u32,
            path: path.iter().map(hex::encode).collect(),
        })
        .collect()
}

/// The root that `leaf` leads to along `proof`.
pub fn root_from_path(leaf: Hash, proof: &BatchProof) -> Result<Hash, PathError> {
    let (mut index, mut len) = (proof.index as usize, proof.size as usize);
    if index >= len {
        return Err(PathError::OutsideBatch);
    }
    let mut path = proof.path.iter();
    let mut node = leaf;
    while len > 1 {
        let sibling = index ^ 1;
        if sibling < len {
            let hex_hash = path.next().ok_or(PathError::TooShort)?;
            let mut s = [0u8; 32];
            hex::decode_to_slice(hex_hash, &mut s).map_err(|_| PathError::NotHex)?;
            node = if index % 2 == 0 {
                node_hash(&node, &s)
            } else {
                node_hash(&s, &node)
            };
        }
        index /= 2;
        len = len.div_ceil(2);
    }
    if path.next().is_some() {
        return Err(PathError::TooLong);
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_leaf_of_every_size_leads_to_the_root_and_only_its_own_does() {
        for n in [1usize, 2, 3, 5, 8, 13, 255, 256] {
            let leaves: Vec<Hash> = (0..n).map(|i| leaf(&[b"t\n", &i.to_be_bytes()])).collect();
            let (root, paths) = tree(&leaves);
            let proofs = proofs(paths);
            for (i, p) in proofs.iter().enumerate() {
                assert_eq!(root_from_path(leaves[i], p), Ok(root), "leaf {i} of {n}");
                if n > 1 {
                    let other = leaves[(i + 1) % n];
                    assert_ne!(root_from_path(other, p), Ok(root));
                }
            }
        }
    }

    #[test]
    fn a_malformed_path_is_named() {
        let leaves: Vec<Hash> = (0..5u8).map(|i| leaf(&[&[i]])).collect();
        let (_, paths) = tree(&leaves);
        let p = proofs(paths).remove(1);
        let mut bad = p.clone();
        bad.index = 5;
        assert_eq!(
            root_from_path(leaves[1], &bad),
            Err(PathError::OutsideBatch)
        );
        let mut bad = p.clone();
        bad.path.pop();
        assert_eq!(root_from_path(leaves[1], &bad), Err(PathError::TooShort));
        let mut bad = p.clone();
        bad.path.push("00".repeat(32));
        assert_eq!(root_from_path(leaves[1], &bad), Err(PathError::TooLong));
        let mut bad = p;
        bad.path[0] = "zz".into();
        assert_eq!(root_from_path(leaves[1], &bad), Err(PathError::NotHex));
    }
}
