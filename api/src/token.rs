//! API tokens as the HTTP API takes and shows them, and as etcd stores them: a name, a
//! role, the policy profile it was created with if any, and never the secret itself, only
//! its SHA-256.

use serde::{Deserialize, Serialize};

/// What a caller may do; each role includes the ones before it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Deploy,
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Deploy => "deploy",
            Role::Admin => "admin",
        }
    }

    /// The role called `name` (`read`, `deploy`, `admin`).
    pub fn parse(name: &str) -> Option<Role> {
        [Role::Read, Role::Deploy, Role::Admin]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

/// A token as stored in etcd: never the token itself, only its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    /// The policy profile its applies are checked under, whatever its role's default
    /// (`capstan token create --policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// `POST /v1/tokens`'s body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
    /// A policy profile the daemon defines; without it, the role's default profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// `POST /v1/tokens`'s answer: the only time the secret is shown.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub token: String,
}
