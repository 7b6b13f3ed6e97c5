//! Query parameters as users write them (CLI flags, HTTP query strings) → [`QueryRequest`].
//!
//! The CLI and the HTTP API share one reading of `from`, `to`, `grain`, `group_by`, `where`,
//! `order_by` and `limit`, so a view answers the same on both. Errors are [`QueryError`]s, which
//! know the parameter at fault; each edge words them with its own [`Spelling`] (`--from` on the
//! command line, `from` in a URL).

use tally_views::{Interval, Param, QueryError, QueryRequest, Timestamp};

/// The raw parameters of a view query.
#[derive(Clone, Debug, Default)]
pub struct QueryParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub grain: Option<String>,
    /// Group columns to keep; `Some(vec![])` keeps none (one row).
    pub group_by: Option<Vec<String>>,
    pub filter: Option<String>,
    pub order_by: Option<String>,
    pub limit: Option<usize>,
}

/// How parameter names are spelled in messages.
#[derive(Clone, Copy, Debug)]
pub enum Spelling {
    /// `--group-by`
    Flags,
    /// `group_by`
    Url,
}

impl Spelling {
    /// The parameter as this edge spells it.
    pub fn name(self, param: Param) -> String {
        match self {
            Spelling::Flags => format!("--{}", param.name().replace('_', "-")),
            Spelling::Url => param.name().to_owned(),
        }
    }

    /// The error's message with the parameters spelled this way.
    pub fn message(self, error: &QueryError) -> String {
        error.message(|p| self.name(p))
    }
}

/// The grains a query may ask for.
pub const GRAINS: &str = "second, minute, hour, day, week, month, quarter, year";

/// The bucket width of a grain name: the units of `date_trunc`.
pub fn grain(name: &str) -> Option<Interval> {
    Interval::of_unit(name.trim())
}

impl QueryParams {
    /// Checks and converts the parameters.
    pub fn to_request(&self) -> Result<QueryRequest, QueryError> {
        let invalid = |param, message| QueryError::Invalid { param, message };
        let time = |param: Param, text: &Option<String>| -> Result<Option<Timestamp>, QueryError> {
            text.as_deref()
                .map(|t| {
                    Timestamp::parse(t).ok_or_else(|| {
                        invalid(
                            param,
                            format!(
                                "'{t}' is not a time; use RFC 3339 such as 2026-03-29T22:00:00Z, or a date"
                            ),
                        )
                    })
                })
                .transpose()
        };
        let grain = match &self.grain {
            None => None,
            Some(g) => Some(grain(g).ok_or_else(|| {
                invalid(
                    Param::Grain,
                    format!("'{g}' is not a grain; use one of {GRAINS}"),
                )
            })?),
        };
        let order_by = match &self.order_by {
            None => None,
            Some(text) => {
                let expected = "expected COL [asc|desc] [nulls first|last]";
                let words: Vec<String> = text
                    .split_whitespace()
                    .map(str::to_ascii_lowercase)
                    .collect();
                let column = text
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let mut rest = words.iter().skip(1).map(String::as_str).peekable();
                let desc = match rest.peek().copied() {
                    Some("asc") => {
                        rest.next();
                        false
                    }
                    Some("desc") => {
                        rest.next();
                        true
                    }
                    _ => false,
                };
                let nulls_first = match (rest.next(), rest.next()) {
                    (None, _) => None,
                    (Some("nulls"), Some("first")) => Some(true),
                    (Some("nulls"), Some("last")) => Some(false),
                    (Some(other), _) => {
                        return Err(invalid(
                            Param::OrderBy,
                            format!("'{text}': {expected}, not '{other}'"),
                        ));
                    }
                };
                if column.is_empty() || rest.next().is_some() {
                    return Err(invalid(Param::OrderBy, format!("'{text}': {expected}")));
                }
                Some(tally_views::OrderBy {
                    column,
                    desc,
                    nulls_first,
                })
            }
        };
        Ok(QueryRequest {
            from: time(Param::From, &self.from)?,
            to: time(Param::To, &self.to)?,
            grain,
            group_by: self.group_by.as_ref().map(|names| {
                names
                    .iter()
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            }),
            filter: self.filter.clone(),
            order_by,
            limit: self.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_the_callers_spelling() {
        let params = QueryParams {
            order_by: Some("n sideways".into()),
            ..QueryParams::default()
        };
        let error = params.to_request().unwrap_err();
        let flags = Spelling::Flags.message(&error);
        let url = Spelling::Url.message(&error);
        assert_eq!(
            flags,
            "--order-by 'n sideways': expected COL [asc|desc] [nulls first|last], not 'sideways'"
        );
        assert_eq!(
            url,
            "order_by 'n sideways': expected COL [asc|desc] [nulls first|last], not 'sideways'"
        );
        let bad_grain = QueryParams {
            grain: Some("fortnight".into()),
            ..QueryParams::default()
        };
        assert_eq!(
            Spelling::Url.message(&bad_grain.to_request().unwrap_err()),
            "grain 'fortnight' is not a grain; use one of second, minute, hour, day, week, month, quarter, year"
        );
    }
}
