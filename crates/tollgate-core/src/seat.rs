//! User seats: named users assigned to a license, up to the effective `max_users`.

use serde::{Deserialize, Serialize};

use crate::machine::text_id;
use crate::timestamp::Timestamp;

text_id!(
    /// A user as the vendor names them (an email, an account id).
    UserId,
    "user",
    false
);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seat {
    pub user: UserId,
    pub assigned_at: Timestamp,
}
