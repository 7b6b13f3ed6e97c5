//! `now()` and `current_timestamp` from Tally's clock, in the tenant's time zone.
//!
//! DataFusion's own `now()` reads the wall clock when the plan is optimized. Tally's clock can
//! be fixed (tests, reproducible answers), and every part of a request must see the same
//! instant, so this replacement returns the instant it was made with.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use tally_views::Timestamp;

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct FixedNow {
    signature: Signature,
    aliases: Vec<String>,
    micros: i64,
    time_zone: Arc<str>,
}

impl FixedNow {
    pub(crate) fn new(now: Timestamp, time_zone: &str) -> FixedNow {
        FixedNow {
            signature: Signature::nullary(Volatility::Stable),
            aliases: vec!["current_timestamp".into()],
            micros: now.0,
            time_zone: Arc::from(time_zone),
        }
    }

    fn value(&self) -> ScalarValue {
        ScalarValue::TimestampMicrosecond(Some(self.micros), Some(self.time_zone.clone()))
    }
}

impl ScalarUDFImpl for FixedNow {
    fn name(&self) -> &str {
        "now"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Timestamp(TimeUnit::Microsecond, Some(self.time_zone.clone())),
            false,
        )))
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some(self.time_zone.clone()),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value()))
    }

    fn simplify(&self, _args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        Ok(ExprSimplifyResult::Simplified(Expr::Literal(
            self.value(),
            None,
        )))
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }
}
