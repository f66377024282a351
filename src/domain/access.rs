//! Who may touch what: every ownership decision of the API, made here and only here.
//!
//! The rules are the original's, including its answers for records that do not exist: an
//! administrator is told nothing happened, anyone else gets the same 401 as for a record
//! of another account (so ids cannot be probed).

use uuid::Uuid;

use super::{msg, Caller, ServiceError};

/// The outcome of a permitted request on a record that may not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The record exists and the caller may change it.
    Granted,
    /// The record does not exist and the caller is an administrator: nothing to do.
    Absent,
}

fn not_authorized() -> ServiceError {
    ServiceError::Unauthorized(msg::NOT_AUTHORIZED.into())
}

/// Changing or deleting a record owned by `owner` (`None`: no such record): its owner or
/// an administrator. Registrations are owned by their creator, subscriptions by their
/// subscriber.
pub fn modify(caller: &Caller, owner: Option<Uuid>) -> Result<Access, ServiceError> {
    match owner {
        Some(owner) if caller.is_admin || owner == caller.id => Ok(Access::Granted),
        None if caller.is_admin => Ok(Access::Absent),
        _ => Err(not_authorized()),
    }
}

/// Reading an account: only the caller's own (no administrator bypass, as in the original).
pub fn read_account(caller: &Caller, id: Option<Uuid>) -> Result<Uuid, ServiceError> {
    match id {
        Some(id) if id == caller.id => Ok(id),
        _ => Err(not_authorized()),
    }
}

/// Deleting an account: the account itself or an administrator.
pub fn delete_account(caller: &Caller, id: Option<Uuid>) -> Result<(), ServiceError> {
    if caller.is_admin || id == Some(caller.id) {
        Ok(())
    } else {
        Err(not_authorized())
    }
}

/// Triggering a registration owned by `owner`: its owner only, administrators included.
pub fn trigger(caller: &Caller, owner: Uuid) -> Result<(), ServiceError> {
    if owner == caller.id {
        Ok(())
    } else {
        Err(ServiceError::Unauthorized(
            msg::NOT_REGISTRATION_OWNER.into(),
        ))
    }
}

/// Inspecting a trigger of a registration owned by `owner` (`None`: no such trigger): its
/// owner or an administrator.
pub fn read_trigger(caller: &Caller, owner: Option<Uuid>) -> Result<(), ServiceError> {
    match owner {
        Some(owner) if caller.is_admin || owner == caller.id => Ok(()),
        Some(_) => Err(not_authorized()),
        None => Err(ServiceError::NotFound(msg::NO_SUCH_TRIGGER.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(is_admin: bool) -> Caller {
        Caller {
            id: Uuid::from_u128(1),
            username: "u".into(),
            is_admin,
        }
    }

    #[test]
    fn owners_and_admins_modify_others_do_not() {
        let (me, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(modify(&caller(false), Some(me)).unwrap(), Access::Granted);
        assert_eq!(modify(&caller(true), Some(other)).unwrap(), Access::Granted);
        assert_eq!(modify(&caller(true), None).unwrap(), Access::Absent);
        assert!(modify(&caller(false), Some(other)).is_err());
        assert!(modify(&caller(false), None).is_err());
    }

    #[test]
    fn accounts_are_read_by_themselves_only() {
        let me = Uuid::from_u128(1);
        assert_eq!(read_account(&caller(true), Some(me)).unwrap(), me);
        assert!(read_account(&caller(true), Some(Uuid::from_u128(2))).is_err());
        assert!(read_account(&caller(false), None).is_err());
        assert!(delete_account(&caller(true), Some(Uuid::from_u128(2))).is_ok());
        assert!(delete_account(&caller(false), None).is_err());
    }

    #[test]
    fn only_the_owner_triggers() {
        assert!(trigger(&caller(false), Uuid::from_u128(1)).is_ok());
        assert!(trigger(&caller(true), Uuid::from_u128(2)).is_err());
        assert!(read_trigger(&caller(true), Some(Uuid::from_u128(2))).is_ok());
        assert!(matches!(
            read_trigger(&caller(false), None),
            Err(ServiceError::NotFound(_))
        ));
    }
}
