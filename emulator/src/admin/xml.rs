//! Reading request bodies: a namespace-resolved element tree. The SDKs disagree on prefixes (`ns0:`,
//! default namespaces, `xsi:` or `i:`, `d6p1:` or `l28:`) and on element order, so requests are
//! matched by (namespace, local name) in any order, which a streaming namespace-aware reader gives
//! directly; serde's derive would bind to one spelling. Responses are written with serde (`model`).

use quick_xml::events::Event;
use quick_xml::name::{QName, ResolveResult};
use quick_xml::reader::NsReader;

/// Atom, the envelope of every entry and feed.
pub const ATOM: &str = "http://www.w3.org/2005/Atom";
/// Service Bus's entity descriptions.
pub const SB: &str = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect";
/// `i:type` on filters, actions and typed values.
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The count elements inside `CountDetails`.
pub const SB_COUNTS: &str = "http://schemas.microsoft.com/netservices/2011/06/servicebus";
/// Typed values (`int`, `string`, ...).
pub const XSD: &str = "http://www.w3.org/2001/XMLSchema";
/// Durations in typed values.
pub const SERIALIZATION: &str = "http://schemas.microsoft.com/2003/10/Serialization/";

/// Deeper documents are refused: descriptions nest five levels, and a bound keeps recursion safe.
const MAX_DEPTH: usize = 32;

/// A qualified name after prefix resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub ns: Option<String>,
    pub local: String,
}

/// One element: its resolved name, its `xsi:type` (resolved too), its text and children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: Name,
    pub xsi_type: Option<Name>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name, in the namespace `ns` or in none (requests written by
    /// hand sometimes forget the default namespace; nothing else uses these local names).
    pub fn child(&self, ns: &str, local: &str) -> Option<&Element> {
        self.children
            .iter()
            .find(|c| c.name.local == local && c.name.ns.as_deref().is_none_or(|n| n == ns))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children
            .iter()
            .filter(move |c| c.name.local == local && c.name.ns.as_deref().is_none_or(|n| n == ns))
    }

    pub fn is(&self, ns: &str, local: &str) -> bool {
        self.name.local == local && self.name.ns.as_deref().is_none_or(|n| n == ns)
    }
}

fn resolved(result: ResolveResult<'_>) -> Result<Option<String>, String> {
    match result {
        ResolveResult::Bound(ns) => Ok(Some(String::from_utf8_lossy(ns.as_ref()).into_owned())),
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Unknown(prefix) => Err(format!(
            "the prefix '{}' is not bound to a namespace",
            String::from_utf8_lossy(&prefix)
        )),
    }
}

/// Parse a whole document into its root element. The error says what is wrong and where.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = NsReader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let position = reader.buffer_position();
        let at = |e: &dyn std::fmt::Display| format!("{e} (at byte {position})");
        let (ns, event) = reader.read_resolved_event().map_err(|e| at(&e))?;
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let ns = resolved(ns).map_err(|e| at(&e))?;
                let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let mut xsi_type = None;
                for attr in start.attributes() {
                    let attr = attr.map_err(|e| at(&e))?;
                    let (attr_ns, attr_local) = reader.resolver().resolve_attribute(attr.key);
                    if attr_local.as_ref() == b"type"
                        && resolved(attr_ns).map_err(|e| at(&e))?.as_deref() == Some(XSI)
                    {
                        let value = attr
                            .decode_and_unescape_value(reader.decoder())
                            .map_err(|e| at(&e))?;
                        // `d6p1:int` names a type in the namespace its prefix is bound to.
                        let (type_ns, type_local) =
                            reader.resolver().resolve_element(QName(value.as_bytes()));
                        xsi_type = Some(Name {
                            ns: resolved(type_ns).map_err(|e| at(&e))?,
                            local: String::from_utf8_lossy(type_local.as_ref()).into_owned(),
                        });
                    }
                }
                let element = Element {
                    name: Name { ns, local },
                    xsi_type,
                    text: String::new(),
                    children: Vec::new(),
                };
                if matches!(event, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(parent) => parent.children.push(element),
                        None => return Ok(element),
                    }
                } else {
                    if stack.len() >= MAX_DEPTH {
                        return Err(at(&format!("elements nest deeper than {MAX_DEPTH} levels")));
                    }
                    stack.push(element);
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(at(&"an end tag without a start tag"));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| at(&e))?);
                }
            }
            Event::GeneralRef(r) => {
                let Some(top) = stack.last_mut() else {
                    continue;
                };
                let name = r.decode().map_err(|e| at(&e))?;
                let text = match &*name {
                    "amp" => "&".to_string(),
                    "lt" => "<".to_string(),
                    "gt" => ">".to_string(),
                    "quot" => "\"".to_string(),
                    "apos" => "'".to_string(),
                    _ => match r.resolve_char_ref().map_err(|e| at(&e))? {
                        Some(c) => c.to_string(),
                        None => return Err(at(&format!("unknown entity &{name};"))),
                    },
                };
                top.text.push_str(&text);
            }
            Event::CData(c) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&c));
                }
            }
            Event::Eof => return Err(at(&"the document ends before its root element is closed")),
            // Declarations, comments, processing instructions and DOCTYPEs carry nothing we use;
            // entities a DOCTYPE declares are never expanded (unknown ones are an error above).
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_to_namespaces() {
        let doc = r#"<?xml version="1.0"?><ns0:entry xmlns:ns0="http://www.w3.org/2005/Atom" xmlns="http://schemas.microsoft.com/netservices/2010/10/servicebus/connect" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><ns0:content type="application/xml"><RuleDescription><Filter xsi:type="SqlFilter"><SqlExpression>a &gt; 1 &amp;&amp; b</SqlExpression></Filter><Value xsi:type="d6p1:int" xmlns:d6p1="http://www.w3.org/2001/XMLSchema">2</Value></RuleDescription></ns0:content></ns0:entry>"#;
        let root = parse(doc).unwrap();
        assert!(root.is(ATOM, "entry"));
        let rule = root
            .child(ATOM, "content")
            .and_then(|c| c.child(SB, "RuleDescription"))
            .unwrap();
        let filter = rule.child(SB, "Filter").unwrap();
        assert_eq!(filter.xsi_type.as_ref().unwrap().local, "SqlFilter");
        assert_eq!(
            filter.child(SB, "SqlExpression").unwrap().text,
            "a > 1 && b"
        );
        let value = rule.child(SB, "Value").unwrap();
        assert_eq!(
            value.xsi_type,
            Some(Name {
                ns: Some(XSD.into()),
                local: "int".into()
            })
        );
    }

    #[test]
    fn malformed_documents_are_errors_not_panics() {
        for doc in [
            "",
            "<a>",
            "<a></b>",
            "<x:a/>",
            "<a>&bogus;</a>",
            "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
        ] {
            assert!(parse(doc).is_err(), "{doc}");
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse(&deep).unwrap_err().contains("deeper"));
    }
}
