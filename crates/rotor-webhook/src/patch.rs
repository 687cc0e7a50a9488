//! The JSON Patch the webhook answers with, built as text. rotor only ever `add`s, so an
//! operation is a JSON pointer and a value already serialised: no `serde_json::Value` tree
//! is built, kept or dropped per admission, and the answer is one concatenation. Offline users
//! (`inject -f`, tests) turn it into a `json_patch::Patch` to apply.

use serde::Serialize;

/// One `add` operation: the pointer (RFC 6901, escaped) and the value as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOp {
    pub path: String,
    value: String,
}

/// The operations of one admission, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch(Vec<AddOp>);

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn ops(&self) -> &[AddOp] {
        &self.0
    }

    /// Adds `value` at the pointer built from `tokens`.
    pub fn add(&mut self, tokens: &[&str], value: &impl Serialize) {
        // The values are plain data built by the planner (strings, numbers, maps with string
        // keys): serialising them cannot fail; `null` would be refused by the API server.
        let value = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
        self.0.push(AddOp {
            path: pointer(tokens),
            value,
        });
    }

    /// Appends `items` to the array at `tokens`, creating it when it does not `exist`.
    pub fn append_all<T: Serialize>(&mut self, tokens: &[&str], exists: bool, items: &[T]) {
        if items.is_empty() {
            return;
        }
        if exists {
            let end = [tokens, &["-"]].concat();
            for item in items {
                self.add(&end, item);
            }
        } else {
            self.add(tokens, &items);
        }
    }

    /// The patch as JSON: `[{"op":"add","path":…,"value":…},…]`.
    pub fn to_json(&self) -> Vec<u8> {
        let size: usize = self
            .0
            .iter()
            .map(|op| op.path.len() + op.value.len() + 32)
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'[');
        for (i, op) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"op\":\"add\",\"path\":");
            // A pointer is a JSON string like any other (its tokens may hold quotes).
            if serde_json::to_writer(&mut out, &op.path).is_err() {
                out.extend_from_slice(b"\"\"");
            }
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(op.value.as_bytes());
            out.push(b'}');
        }
        out.push(b']');
        out
    }

    /// The same operations as a `json_patch::Patch`, to apply offline.
    pub fn to_json_patch(&self) -> serde_json::Result<json_patch::Patch> {
        serde_json::from_slice(&self.to_json())
    }
}

/// The JSON pointer of `tokens`, each escaped per RFC 6901 (`~` as `~0`, `/` as `~1`).
fn pointer(tokens: &[&str]) -> String {
    let mut path = String::with_capacity(tokens.iter().map(|t| t.len() + 1).sum());
    for token in tokens {
        path.push('/');
        for c in token.chars() {
            match c {
                '~' => path.push_str("~0"),
                '/' => path.push_str("~1"),
                c => path.push(c),
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointer_tokens_are_escaped() {
        let mut patch = Patch::default();
        patch.add(&["metadata", "annotations", "rotor.dev/x~y"], &"v");
        assert_eq!(patch.ops()[0].path, "/metadata/annotations/rotor.dev~1x~0y");
    }

    #[test]
    fn the_text_is_the_json_patch_that_json_patch_applies() {
        let mut patch = Patch::default();
        patch.append_all(&["spec", "volumes"], false, &[json!({ "name": "a\"b" })]);
        patch.append_all(&["spec", "volumes"], true, &[json!({ "name": "c" })]);
        patch.add(&["metadata", "labels", "x/y"], &"1");
        patch.append_all::<serde_json::Value>(&["spec", "none"], false, &[]);
        let mut doc = json!({ "metadata": { "labels": {} }, "spec": {} });
        json_patch::patch(&mut doc, &patch.to_json_patch().unwrap()).unwrap();
        assert_eq!(
            doc,
            json!({ "metadata": { "labels": { "x/y": "1" } },
                    "spec": { "volumes": [{ "name": "a\"b" }, { "name": "c" }] } })
        );
        assert_eq!(Patch::default().to_json(), b"[]");
    }
}
