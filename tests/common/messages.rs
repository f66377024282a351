//! The error messages the API answers with, shared by every suite that checks one (an answer
//! is `{"Error": <message>}`; the texts are the original service's, byte for byte).

pub const INVALID_PAGING: &str = "Invalid limit or start parameter";
pub const MISSING_API_KEY: &str = "Missing API key header value";
pub const MISSING_USERNAME: &str = "Missing username header value";
pub const UNKNOWN_USERNAME: &str = "Invalid API key or Username";
pub const INVALID_API_KEY: &str = "Invalid API key";
pub const NOT_AN_ADMIN: &str = "Not an Admin";
pub const NOT_AUTHORIZED: &str = "Not authorized";
pub const NO_TRIGGER_ACCESS: &str =
    "You don't have access to this registration record or it no longer exists";
pub const RESET_FAILED: &str = "Failed to contact the endpoint or wrong HTTP status code returned";
