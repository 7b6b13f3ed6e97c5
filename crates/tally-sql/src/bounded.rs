//! String functions whose result size a query chooses, bounded.
//!
//! `repeat(s, n)`, `lpad(s, n)` and `rpad(s, n)` allocate what their arguments ask for, outside
//! DataFusion's memory pool: `repeat('x', 2000000000)` made a 2 GB value. These replacements
//! check the largest value a call could make against [`MAX_VALUE_BYTES`] and answer an error
//! before the inner function allocates anything.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// The largest text value these functions may make: 16 MB.
pub(crate) const MAX_VALUE_BYTES: i64 = 16 * 1024 * 1024;

/// How a function's result size follows from its arguments.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Size {
    /// The text times the count (`repeat`).
    Product,
    /// The length argument, in characters of up to 4 bytes (`lpad`, `rpad`).
    Length,
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Bounded {
    inner: Arc<ScalarUDF>,
    size: Size,
}

/// The bounded replacements, to register over DataFusion's own.
pub(crate) fn functions() -> Vec<ScalarUDF> {
    use datafusion::functions::{string, unicode};
    [
        (string::repeat(), Size::Product),
        (unicode::lpad(), Size::Length),
        (unicode::rpad(), Size::Length),
    ]
    .into_iter()
    .map(|(inner, size)| ScalarUDF::from(Bounded { inner, size }))
    .collect()
}

/// The largest value of an integer argument, or of the lengths of a text argument.
fn largest(arg: &ColumnarValue, text: bool) -> Result<i64> {
    let array = arg.to_array(1)?;
    let values = if text { length(&array)? } else { array };
    let values = cast(&values, &DataType::Int64)?;
    Ok(max(values.as_primitive::<Int64Type>()).unwrap_or(0))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = match (self.size, args.args.as_slice()) {
            (Size::Product, [text, count, ..]) => {
                largest(text, true)?.saturating_mul(largest(count, false)?)
            }
            (Size::Length, [_, n, ..]) => largest(n, false)?.saturating_mul(4),
            _ => 0,
        };
        if bytes > MAX_VALUE_BYTES {
            return exec_err!(
                "{} would make a value of up to {bytes} bytes; the limit is {} bytes",
                self.name(),
                MAX_VALUE_BYTES
            );
        }
        self.inner.invoke_with_args(args)
    }
}
