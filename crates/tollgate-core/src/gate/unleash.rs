//! Unleash's feature definitions, in the JSON shape of its client API
//! (`/api/client/features`) and of the client specification's `state`, so that a
//! vendor's existing flags load unchanged.
//!
//! RULE (as for every event type): fields are declared in sorted serialized-name
//! order and hold no floats or hash maps. Numbers Unleash sometimes sends where it
//! means text (`"rollout": 50`) are kept as text, so nothing here is ever a float.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::refusal::{Refusal, RefusalKind};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Constraint {
    #[serde(default, skip_serializing_if = "is_false")]
    pub case_insensitive: bool,
    pub context_name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub inverted: bool,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "opt_text")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "text_list")]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(deserialize_with = "text")]
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Override {
    pub context_name: String,
    #[serde(default, deserialize_with = "text_list")]
    pub values: Vec<String>,
}

/// A variant of a whole gate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Variant {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub overrides: Vec<Override>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<String>,
    #[serde(default)]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<String>,
}

/// A variant of one strategy: chosen when that strategy is the first to match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StrategyVariant {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stickiness: Option<String>,
    #[serde(default)]
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_type: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strategy {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub constraints: Vec<Constraint>,
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "text_map")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub segments: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub variants: Vec<StrategyVariant>,
}

/// A gate that must be on (or off, `enabled: false`) for this one to be evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    pub feature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<Vec<String>>,
}

/// Constraints shared by many strategies, referenced by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(default, deserialize_with = "null_as_default")]
    pub constraints: Vec<Constraint>,
    pub id: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One feature of an Unleash client features document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnleashFeature {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub dependencies: Vec<Dependency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub strategies: Vec<Strategy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub variants: Vec<Variant>,
}

/// `{"version", "features", "segments"}` as Unleash's client API serves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeaturesDocument {
    #[serde(default, deserialize_with = "null_as_default")]
    pub features: Vec<UnleashFeature>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub version: u32,
}

/// Reads an Unleash features document; anything malformed is an `INVALID_GATE` refusal.
pub fn parse_features_document(json: &[u8]) -> Result<FeaturesDocument, Refusal> {
    serde_json::from_slice(json).map_err(|e| {
        Refusal::new(RefusalKind::Invalid, "INVALID_GATE", format!("not an Unleash client features document: {e}"))
    })
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A scalar Unleash may send as a number or boolean where it means text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Float(f64),
}

impl Scalar {
    fn into_text<E: serde::de::Error>(self) -> Result<String, E> {
        Ok(match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(u) => u.to_string(),
            Scalar::Bool(b) => b.to_string(),
            // Kept as text would be lossy in general (`0.1 + 0.2`); refused, never stored.
            Scalar::Float(f) => {
                return Err(E::custom(format!("{f} is not an integer; write non-integer numbers as strings")));
            }
        })
    }
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Scalar::deserialize(d)?.into_text()
}

fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<Scalar>::deserialize(d)?.map(Scalar::into_text).transpose()
}

fn text_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Option::<Vec<Option<Scalar>>>::deserialize(d)?.unwrap_or_default();
    items.into_iter().flatten().map(Scalar::into_text).collect()
}

pub(crate) fn text_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let items = Option::<BTreeMap<String, Option<Scalar>>>::deserialize(d)?.unwrap_or_default();
    items.into_iter().filter_map(|(k, v)| v.map(|v| v.into_text().map(|v| (k, v)))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_become_text_and_floats_are_refused() {
        let s: Strategy =
            serde_json::from_str(r#"{"name":"flexibleRollout","parameters":{"rollout":50,"groupId":"g"}}"#).unwrap();
        assert_eq!(s.parameters["rollout"], "50");
        let err = serde_json::from_str::<Strategy>(r#"{"name":"x","parameters":{"rollout":33.3}}"#).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }

    #[test]
    fn nulls_read_as_empty() {
        let f: UnleashFeature =
            serde_json::from_str(r#"{"name":"a","strategies":null,"variants":null,"dependencies":null}"#).unwrap();
        assert!(f.enabled && f.strategies.is_empty() && f.variants.is_empty());
    }
}
