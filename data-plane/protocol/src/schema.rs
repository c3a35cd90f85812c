//! Reduces a JSON Schema (tool parameters, structured-output schema) to the OpenAPI subset
//! that Gemini's `Schema` accepts.
//!
//! Gemini rejects keywords it does not know (`additionalProperties`, `$ref`, `const`, ...),
//! so clients' schemas, written for OpenAI or Anthropic, are rewritten:
//!
//! - local `$ref`s (`#`, `#/$defs/..`, `#/definitions/..`, any JSON pointer into the
//!   document) are inlined; a reference back into a definition being expanded (a recursive
//!   schema) is cut there and replaced by `{"type": <its type or "object">}`, since Gemini
//!   cannot express recursion;
//! - `const: x` becomes `enum: [x]`;
//! - `type: [x, "null"]`, `anyOf`/`oneOf` with a `{"type": "null"}` member and `enum` with a
//!   `null` member become `nullable: true`; an `anyOf` left with one member is merged into
//!   its parent; `oneOf` becomes `anyOf`; `allOf` members are merged;
//! - `format` is kept only where Gemini allows it (`enum` and `date-time` on strings,
//!   `int32`/`int64` on integers, `float`/`double` on numbers);
//! - `enum` is kept only when all its values are strings (Gemini enums are strings);
//! - of everything else only `type`, `description`, `properties`, `required` (limited to
//!   declared properties), `items`, `minItems`, `maxItems`, `minimum`, `maximum`,
//!   `nullable`, `anyOf` and `propertyOrdering` survive.

use serde_json::{Map, Value};

/// Nesting deeper than this is refused: no real tool schema comes close, and it bounds the
/// work a hostile schema can cause.
const MAX_DEPTH: usize = 64;

/// Why a schema cannot be reduced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A `$ref` that is not a local JSON pointer, or that points at nothing.
    #[error("$ref `{0}` does not resolve to a definition in the same schema")]
    UnresolvedRef(String),
    /// More than 64 levels of nesting.
    #[error("schema nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The schema is not a JSON object (or boolean).
    #[error("schema must be a JSON object")]
    NotAnObject,
}

/// Returns the Gemini form of `schema`. The input is not changed.
pub fn reduce_for_gemini(schema: &Value) -> Result<Value, SchemaError> {
    let mut reducer = Reducer {
        root: schema,
        expanding: Vec::new(),
    };
    match schema {
        Value::Object(_) => reducer.reduce(schema, 0),
        Value::Bool(true) => Ok(Value::Object(Map::new())),
        _ => Err(SchemaError::NotAnObject),
    }
}

struct Reducer<'a> {
    root: &'a Value,
    /// The `$ref`s being inlined on the current path, to cut recursion.
    expanding: Vec<String>,
}

// === impl Reducer ===

impl Reducer<'_> {
    fn reduce(&mut self, schema: &Value, depth: usize) -> Result<Value, SchemaError> {
        if depth > MAX_DEPTH {
            return Err(SchemaError::TooDeep);
        }
        let Value::Object(object) = schema else {
            // `true` (anything) and malformed members reduce to an unconstrained schema.
            return Ok(Value::Object(Map::new()));
        };

        if let Some(Value::String(reference)) = object.get("$ref") {
            return self.reduce_ref(reference, object, depth);
        }

        let mut out = Map::new();
        let mut nullable = object.get("nullable").and_then(Value::as_bool) == Some(true);

        match object.get("type") {
            Some(Value::String(kind)) if kind == "null" => nullable = true,
            Some(Value::String(kind)) => {
                out.insert("type".into(), Value::String(kind.clone()));
            }
            Some(Value::Array(kinds)) => {
                let mut kinds: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
                if let Some(at) = kinds.iter().position(|k| *k == "null") {
                    kinds.remove(at);
                    nullable = true;
                }
                match kinds.as_slice() {
                    [] => {}
                    [single] => {
                        out.insert("type".into(), Value::String((*single).to_owned()));
                    }
                    several => {
                        let members = several
                            .iter()
                            .map(|kind| {
                                let mut member = Map::new();
                                member.insert("type".into(), Value::String((*kind).to_owned()));
                                Value::Object(member)
                            })
                            .collect();
                        out.insert("anyOf".into(), Value::Array(members));
                    }
                }
            }
            _ => {}
        }

        if let Some(Value::String(description)) = object.get("description") {
            out.insert("description".into(), Value::String(description.clone()));
        }

        if let (Some(Value::String(format)), Some(Value::String(kind))) =
            (object.get("format"), out.get("type"))
        {
            let allowed = match kind.as_str() {
                "string" | "STRING" => matches!(format.as_str(), "enum" | "date-time"),
                "integer" | "INTEGER" => matches!(format.as_str(), "int32" | "int64"),
                "number" | "NUMBER" => matches!(format.as_str(), "float" | "double"),
                _ => false,
            };
            if allowed {
                out.insert("format".into(), Value::String(format.clone()));
            }
        }

        let mut values: Option<Vec<Value>> = match (object.get("enum"), object.get("const")) {
            (Some(Value::Array(values)), _) => Some(values.clone()),
            (None, Some(value)) => Some(vec![value.clone()]),
            _ => None,
        };
        if let Some(list) = &mut values {
            if list.iter().any(Value::is_null) {
                nullable = true;
                list.retain(|v| !v.is_null());
            }
            if !list.is_empty() && list.iter().all(Value::is_string) {
                out.insert("enum".into(), Value::Array(list.clone()));
                out.entry("type")
                    .or_insert_with(|| Value::String("string".into()));
            }
        }

        if let Some(Value::Object(properties)) = object.get("properties") {
            let mut reduced = Map::new();
            for (name, property) in properties {
                reduced.insert(name.clone(), self.reduce(property, depth + 1)?);
            }
            if let Some(Value::Array(required)) = object.get("required") {
                let required: Vec<Value> = required
                    .iter()
                    .filter(|name| name.as_str().is_some_and(|n| reduced.contains_key(n)))
                    .cloned()
                    .collect();
                if !required.is_empty() {
                    out.insert("required".into(), Value::Array(required));
                }
            }
            if !reduced.is_empty() {
                out.insert("properties".into(), Value::Object(reduced));
            }
        }
        if let Some(Value::Array(ordering)) = object.get("propertyOrdering") {
            out.insert("propertyOrdering".into(), Value::Array(ordering.clone()));
        }

        match object.get("items") {
            Some(items @ Value::Object(_)) => {
                out.insert("items".into(), self.reduce(items, depth + 1)?);
            }
            // Tuple form: Gemini has no tuples; any of the member types is the closest.
            Some(Value::Array(members)) if !members.is_empty() => {
                let items = self.reduce_any_of(members, depth + 1, &mut nullable)?;
                out.insert("items".into(), items);
            }
            _ => {}
        }

        for key in ["minItems", "maxItems", "minimum", "maximum"] {
            if let Some(value @ Value::Number(_)) = object.get(key) {
                out.insert(key.into(), value.clone());
            }
        }

        let any_of = object
            .get("anyOf")
            .or_else(|| object.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(members) = any_of {
            let mut member_nullable = false;
            let reduced = self.reduce_any_of(members, depth + 1, &mut member_nullable)?;
            nullable |= member_nullable;
            merge_into(&mut out, reduced);
        }

        if let Some(Value::Array(members)) = object.get("allOf") {
            for member in members {
                let reduced = self.reduce(member, depth + 1)?;
                merge_into(&mut out, reduced);
            }
        }

        if nullable {
            out.insert("nullable".into(), Value::Bool(true));
        }
        Ok(Value::Object(out))
    }

    /// Reduces `anyOf` members: null members set `nullable`; a single remaining member is
    /// returned as is (to be merged into the parent), several become `{"anyOf": [...]}`.
    fn reduce_any_of(
        &mut self,
        members: &[Value],
        depth: usize,
        nullable: &mut bool,
    ) -> Result<Value, SchemaError> {
        let mut reduced = Vec::with_capacity(members.len());
        for member in members {
            if member.get("type").and_then(Value::as_str) == Some("null") {
                *nullable = true;
                continue;
            }
            let mut member = self.reduce(member, depth)?;
            if let Some(object) = member.as_object_mut()
                && object.remove("nullable").is_some()
            {
                *nullable = true;
            }
            reduced.push(member);
        }
        Ok(match reduced.len() {
            0 => Value::Object(Map::new()),
            1 => reduced.pop().unwrap_or_default(),
            _ => {
                let mut out = Map::new();
                out.insert("anyOf".into(), Value::Array(reduced));
                Value::Object(out)
            }
        })
    }

    fn reduce_ref(
        &mut self,
        reference: &str,
        object: &Map<String, Value>,
        depth: usize,
    ) -> Result<Value, SchemaError> {
        let target = resolve_pointer(self.root, reference)
            .ok_or_else(|| SchemaError::UnresolvedRef(reference.to_owned()))?;
        let mut out = if self.expanding.iter().any(|r| r == reference) {
            // Recursion: cut it with the target's type, the most Gemini can say.
            let kind = match target.get("type") {
                Some(Value::String(kind)) if kind != "null" => kind.clone(),
                _ => "object".to_owned(),
            };
            let mut cut = Map::new();
            cut.insert("type".into(), Value::String(kind));
            if let Some(Value::String(description)) = target.get("description") {
                cut.insert("description".into(), Value::String(description.clone()));
            }
            Value::Object(cut)
        } else {
            self.expanding.push(reference.to_owned());
            let reduced = self.reduce(target, depth + 1);
            self.expanding.pop();
            reduced?
        };
        // Siblings of `$ref` (allowed since draft 2019-09), e.g. a local description.
        let mut siblings = object.clone();
        siblings.remove("$ref");
        if !siblings.is_empty() {
            let reduced = self.reduce(&Value::Object(siblings), depth + 1)?;
            if let (Some(out), Value::Object(extra)) = (out.as_object_mut(), reduced) {
                for (key, value) in extra {
                    out.insert(key, value);
                }
            }
        }
        Ok(out)
    }
}

/// Merges a reduced member into `out`: properties and required lists are united, other
/// keys already present win.
fn merge_into(out: &mut Map<String, Value>, member: Value) {
    let Value::Object(member) = member else {
        return;
    };
    for (key, value) in member {
        match (key.as_str(), out.get_mut(&key), value) {
            ("properties", Some(Value::Object(existing)), Value::Object(more)) => {
                for (name, property) in more {
                    existing.entry(name).or_insert(property);
                }
            }
            ("required", Some(Value::Array(existing)), Value::Array(more)) => {
                for name in more {
                    if !existing.contains(&name) {
                        existing.push(name);
                    }
                }
            }
            (_, Some(_), _) => {}
            (_, None, value) => {
                out.insert(key, value);
            }
        }
    }
}

/// Resolves a local reference (`#` or `#/json/pointer`) against the root document.
fn resolve_pointer<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    // `Value::pointer` handles the `~0`/`~1` escapes; percent-encoding is rare enough in
    // tool schemas to leave out.
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reduce(schema: Value) -> Value {
        reduce_for_gemini(&schema).unwrap()
    }

    #[test]
    fn keeps_the_supported_keywords() {
        let schema = json!({
            "type": "object",
            "description": "d",
            "properties": {
                "a": {"type": "string", "enum": ["x", "y"], "format": "enum"},
                "b": {"type": "array", "items": {"type": "integer", "format": "int64"}, "minItems": 1, "maxItems": 3},
                "c": {"type": "number", "minimum": 0, "maximum": 1.5, "format": "double"}
            },
            "required": ["a"],
            "propertyOrdering": ["a", "b", "c"]
        });
        assert_eq!(reduce(schema.clone()), schema);
    }

    #[test]
    fn drops_unsupported_keywords() {
        let reduced = reduce(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "$id": "x",
            "title": "T",
            "type": "object",
            "additionalProperties": false,
            "default": {},
            "examples": [{}],
            "properties": {"a": {"type": "string", "pattern": "^a", "minLength": 1, "default": "a"}}
        }));
        assert_eq!(
            reduced,
            json!({"type": "object", "properties": {"a": {"type": "string"}}})
        );
    }

    #[test]
    fn inlines_defs_and_definitions() {
        let reduced = reduce(json!({
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A"},
                "b": {"$ref": "#/definitions/B", "description": "local"}
            },
            "$defs": {"A": {"type": "string", "description": "an a"}},
            "definitions": {"B": {"type": "integer", "description": "a b"}}
        }));
        assert_eq!(
            reduced,
            json!({"type": "object", "properties": {
                "a": {"type": "string", "description": "an a"},
                "b": {"type": "integer", "description": "local"}
            }})
        );
    }

    #[test]
    fn cuts_recursive_refs() {
        let reduced = reduce(json!({
            "$defs": {"Node": {
                "type": "object",
                "properties": {"value": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}
            }},
            "$ref": "#/$defs/Node"
        }));
        assert_eq!(
            reduced,
            json!({"type": "object", "properties": {
                "value": {"type": "string"},
                "children": {"type": "array", "items": {"type": "object"}}
            }})
        );
        let root_recursion = reduce(json!({
            "type": "object",
            "properties": {"next": {"$ref": "#"}}
        }));
        assert_eq!(
            root_recursion,
            json!({"type": "object", "properties": {"next": {"type": "object", "properties": {"next": {"type": "object"}}}}})
        );
    }

    #[test]
    fn unresolved_and_remote_refs_are_errors() {
        assert_eq!(
            reduce_for_gemini(&json!({"$ref": "#/$defs/Missing"})),
            Err(SchemaError::UnresolvedRef("#/$defs/Missing".into()))
        );
        assert_eq!(
            reduce_for_gemini(&json!({"$ref": "https://example.com/s.json"})),
            Err(SchemaError::UnresolvedRef(
                "https://example.com/s.json".into()
            ))
        );
    }

    #[test]
    fn const_becomes_single_value_enum() {
        assert_eq!(
            reduce(json!({"const": "fixed"})),
            json!({"type": "string", "enum": ["fixed"]})
        );
        // Gemini enums are strings: a numeric const keeps only its type.
        assert_eq!(
            reduce(json!({"type": "integer", "const": 3})),
            json!({"type": "integer"})
        );
    }

    #[test]
    fn type_array_with_null_becomes_nullable() {
        assert_eq!(
            reduce(json!({"type": ["string", "null"]})),
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            reduce(json!({"type": ["string", "integer"]})),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}]})
        );
    }

    #[test]
    fn any_of_with_null_becomes_nullable() {
        assert_eq!(
            reduce(json!({"anyOf": [{"type": "string", "description": "s"}, {"type": "null"}]})),
            json!({"type": "string", "description": "s", "nullable": true})
        );
        assert_eq!(
            reduce(json!({"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]})),
            json!({"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": true})
        );
        assert_eq!(
            reduce(json!({"enum": ["a", null]})),
            json!({"type": "string", "enum": ["a"], "nullable": true})
        );
    }

    #[test]
    fn keeps_only_formats_gemini_allows() {
        assert_eq!(
            reduce(json!({"type": "string", "format": "date-time"})),
            json!({"type": "string", "format": "date-time"})
        );
        assert_eq!(
            reduce(json!({"type": "string", "format": "uri"})),
            json!({"type": "string"})
        );
        assert_eq!(
            reduce(json!({"type": "integer", "format": "int32"})),
            json!({"type": "integer", "format": "int32"})
        );
        assert_eq!(
            reduce(json!({"type": "number", "format": "int32"})),
            json!({"type": "number"})
        );
        assert_eq!(
            reduce(json!({"type": "number", "format": "float"})),
            json!({"type": "number", "format": "float"})
        );
    }

    #[test]
    fn non_string_enums_are_dropped() {
        assert_eq!(
            reduce(json!({"type": "integer", "enum": [1, 2]})),
            json!({"type": "integer"})
        );
    }

    #[test]
    fn required_is_limited_to_declared_properties() {
        assert_eq!(
            reduce(
                json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "ghost"]})
            ),
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
        );
    }

    #[test]
    fn all_of_members_are_merged() {
        assert_eq!(
            reduce(json!({"allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "integer"}}, "required": ["b"]}
            ]})),
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
        );
    }

    #[test]
    fn tuple_items_become_any_of() {
        assert_eq!(
            reduce(json!({"type": "array", "items": [{"type": "string"}, {"type": "integer"}]})),
            json!({"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}})
        );
    }

    #[test]
    fn depth_is_bounded() {
        let mut schema = json!({"type": "string"});
        for _ in 0..100 {
            schema = json!({"type": "array", "items": schema});
        }
        assert_eq!(reduce_for_gemini(&schema), Err(SchemaError::TooDeep));
    }

    #[test]
    fn non_objects_are_rejected() {
        assert_eq!(
            reduce_for_gemini(&json!("string")),
            Err(SchemaError::NotAnObject)
        );
        assert_eq!(reduce_for_gemini(&json!(true)), Ok(json!({})));
    }
}
