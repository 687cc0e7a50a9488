//! Reading one element's text from an STS answer (the query API answers in XML). Linear, no
//! allocation beyond the result; entities unescaped. Enough for the flat, known answers rotor
//! reads; not an XML parser.

/// The text of the first `<tag>...</tag>` in `doc`.
pub fn element(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let len = doc[start..].find(&format!("</{tag}>"))?;
    Some(unescape(&doc[start..start + len]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_element_is_read_and_unescaped() {
        let doc = "<R><Credentials><AccessKeyId>AKIA</AccessKeyId><SessionToken>a&amp;b&lt;c</SessionToken></Credentials></R>";
        assert_eq!(element(doc, "AccessKeyId").as_deref(), Some("AKIA"));
        assert_eq!(element(doc, "SessionToken").as_deref(), Some("a&b<c"));
        assert_eq!(element(doc, "Missing"), None);
        assert_eq!(element("<A>unclosed", "A"), None);
    }
}
