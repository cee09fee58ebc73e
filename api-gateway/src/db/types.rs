//! The rules' enums in text columns: [`Db`] maps each with `sqlx::Type`,
//! so rows decode into typed values (an unknown value is a decode error,
//! never a silent default) and binds take the enums themselves.

use std::borrow::Cow;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use failover_core::effects::AuditOperation;
use failover_core::inventory::OsFamily;
use failover_core::{ErrorCode, JobStatus, JobType, StepName, StepStatus};

/// An enum stored as text.
pub trait TextEnum: Sized + Send + Sync {
    /// What the column holds, for decode errors.
    const WHAT: &'static str;
    fn text(&self) -> Cow<'static, str>;
    fn from_text(text: &str) -> Option<Self>;
}

/// A rules enum as a Postgres `text` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Db<T>(pub T);

impl<T: TextEnum> Type<Postgres> for Db<T> {
    fn type_info() -> PgTypeInfo {
        <&str as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <&str as Type<Postgres>>::compatible(ty)
    }
}

impl<T: TextEnum> PgHasArrayType for Db<T> {
    fn array_type_info() -> PgTypeInfo {
        <&str as PgHasArrayType>::array_type_info()
    }
}

impl<T: TextEnum> Encode<'_, Postgres> for Db<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&str as Encode<Postgres>>::encode_by_ref(&self.0.text().as_ref(), buf)
    }
}

impl<'r, T: TextEnum> Decode<'r, Postgres> for Db<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Postgres>>::decode(value)?;
        T::from_text(text)
            .map(Db)
            .ok_or_else(|| format!("unknown {} {text:?}", T::WHAT).into())
    }
}

macro_rules! text_enum {
    ($ty:ty, $what:literal) => {
        impl TextEnum for $ty {
            const WHAT: &'static str = $what;
            fn text(&self) -> Cow<'static, str> {
                Cow::Borrowed(self.as_str())
            }
            fn from_text(text: &str) -> Option<Self> {
                <$ty>::parse(text)
            }
        }

        impl From<Db<$ty>> for $ty {
            fn from(value: Db<$ty>) -> Self {
                value.0
            }
        }
    };
}

text_enum!(JobStatus, "job status");
text_enum!(StepStatus, "step status");
text_enum!(JobType, "job type");
text_enum!(StepName, "step name");
text_enum!(ErrorCode, "error code");
text_enum!(OsFamily, "os family");

impl TextEnum for AuditOperation {
    const WHAT: &'static str = "audit operation";

    fn text(&self) -> Cow<'static, str> {
        Cow::Owned(self.name())
    }

    fn from_text(text: &str) -> Option<Self> {
        AuditOperation::parse(text)
    }
}

impl From<Db<AuditOperation>> for AuditOperation {
    fn from(value: Db<AuditOperation>) -> Self {
        value.0
    }
}
