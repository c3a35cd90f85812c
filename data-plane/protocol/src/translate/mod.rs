//! Translations between protocols, one module per pair. Each module offers request and
//! response functions for both directions and a [`StreamTranslator`](crate::StreamTranslator)
//! per direction.
//!
//! Helpers more than one pair needs live here: [`parse_data_url`] and
//! [`gemini_schema_to_json_schema`] (and, for the Gemini direction, [`crate::schema`]).

use serde_json::{Map, Value};

use crate::TranslateError;

pub mod anthropic_gemini;
pub mod anthropic_openai;
pub mod openai_gemini;

/// Parses a stream event straight into `T` when it cannot be an `{"error": ...}` event,
/// which is nearly always: parsing to a tree first, to look for the error, and then from
/// the tree cost about twice as much per event. `None`: `"error"` appears in the data,
/// and the caller looks at it as a tree. Text cannot match, because a quote inside a JSON
/// string is escaped; a key spelled with escapes (`"\u0065rror"`) would pass as an
/// ordinary event.
pub(crate) fn parse_unless_error<T: serde::de::DeserializeOwned>(
    data: &str,
    what: &'static str,
) -> Option<Result<T, TranslateError>> {
    (!data.contains("\"error\""))
        .then(|| serde_json::from_str(data).map_err(|e| TranslateError::upstream_json(what, e)))
}

/// Splits `data:<mime>[;param]*;base64,<data>` into the MIME type and the base64 data.
pub fn parse_data_url(url: &str) -> Result<(&str, &str), TranslateError> {
    let rest = url
        .strip_prefix("data:")
        .ok_or(TranslateError::InvalidDataUrl)?;
    let (meta, data) = rest.split_once(',').ok_or(TranslateError::InvalidDataUrl)?;
    let mut params = meta.split(';');
    let mime_type = params.next().unwrap_or_default();
    if mime_type.is_empty() || !params.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err(TranslateError::InvalidDataUrl);
    }
    Ok((mime_type, data))
}

/// Gemini's OpenAPI-subset schema as JSON Schema: upper-case type names become lower
/// case, and `nullable: true` becomes a `"null"` member of `type`.
pub fn gemini_schema_to_json_schema(schema: &Value) -> Value {
    let Value::Object(object) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    let nullable = object.get("nullable").and_then(Value::as_bool) == Some(true);
    for (key, value) in object {
        match (key.as_str(), value) {
            ("nullable", _) => {}
            ("type", Value::String(kind)) => {
                let kind = Value::String(kind.to_ascii_lowercase());
                let kind = if nullable {
                    Value::Array(vec![kind, Value::String("null".into())])
                } else {
                    kind
                };
                out.insert(key.clone(), kind);
            }
            ("properties", Value::Object(properties)) => {
                let converted = properties
                    .iter()
                    .map(|(name, property)| (name.clone(), gemini_schema_to_json_schema(property)))
                    .collect();
                out.insert(key.clone(), Value::Object(converted));
            }
            ("items", items) => {
                out.insert(key.clone(), gemini_schema_to_json_schema(items));
            }
            ("anyOf", Value::Array(members)) => {
                let converted = members.iter().map(gemini_schema_to_json_schema).collect();
                out.insert(key.clone(), Value::Array(converted));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

/// The functions a Gemini request declares, each with its parameters as JSON Schema (an
/// empty object schema when it has none), for a target that takes JSON Schema. Google's
/// built-in tools (`googleSearch`, `codeExecution`, ...) run on Google's side, so no
/// other provider can honour them: they are refused rather than dropped.
pub fn gemini_functions_as_json_schema(
    tools: &[crate::gemini::Tool],
) -> Result<Vec<(&crate::gemini::FunctionDeclaration, Value)>, TranslateError> {
    let mut out = Vec::new();
    for tool in tools {
        let builtin = if tool.google_search.is_some() {
            Some("googleSearch")
        } else if tool.code_execution.is_some() {
            Some("codeExecution")
        } else {
            tool.extra.keys().next().map(String::as_str)
        };
        if let Some(builtin) = builtin {
            return Err(TranslateError::UnsupportedValue {
                field: "tools",
                value: builtin.to_owned(),
            });
        }
        for declaration in tool.function_declarations.iter().flatten() {
            let schema = declaration
                .parameters_json_schema
                .clone()
                .or_else(|| {
                    declaration
                        .parameters
                        .as_ref()
                        .map(gemini_schema_to_json_schema)
                })
                .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
            out.push((declaration, schema));
        }
    }
    Ok(out)
}

/// Appends a Gemini turn, merging it into the previous one when both have the same role
/// and both are (or both are not) function responses: Gemini wants the results of one
/// step's calls in one user turn, and keeping results apart from user text keeps the turn
/// boundaries that thought-signature validation looks for.
pub(crate) fn push_gemini_turn(
    contents: &mut Vec<crate::gemini::Content>,
    role: &str,
    parts: Vec<crate::gemini::Part>,
) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last.role.as_deref() == Some(role)
        && is_function_responses(&last.parts) == is_function_responses(&parts)
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(crate::gemini::Content {
        role: Some(role.to_owned()),
        parts,
        extra: Map::new(),
    });
}

/// Whether a Gemini turn's parts are all function responses.
pub(crate) fn is_function_responses(parts: &[crate::gemini::Part]) -> bool {
    parts.iter().all(|p| p.function_response.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_naming_error_are_left_to_the_tree() {
        let parse = |data| parse_unless_error::<Value>(data, "event");
        let plain = r#"{"candidates":[{"content":{"parts":[{"text":"say \"error\" twice"}]}}]}"#;
        assert_eq!(
            parse(plain).unwrap().unwrap(),
            serde_json::from_str::<Value>(plain).unwrap()
        );
        assert!(parse(r#"{"error":{"code":429,"message":"slow down"}}"#).is_none());
        assert!(parse(r#"{ "error" : {"message":"x"}}"#).is_none());
        // A value that is just the word: the slower path, still right.
        assert!(parse(r#"{"candidates":[{"content":{"parts":[{"text":"error"}]}}]}"#).is_none());
        assert!(matches!(
            parse("{not json"),
            Some(Err(TranslateError::InvalidUpstreamJson { .. }))
        ));
    }
}
