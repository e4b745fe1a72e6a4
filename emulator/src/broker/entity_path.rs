//! Address normalisation: clients name the same queue as `amqps://host:port/q`, `sb://host/q`, `/q` or `q`,
//! and a subscription as `<topic>/Subscriptions/<name>` (any case).

/// The sub-queue suffix Service Bus uses for a queue's dead-letter queue.
pub const DEAD_LETTER_SUFFIX: &str = "$DeadLetterQueue";

/// The segment between a topic and a subscription name.
pub const SUBSCRIPTIONS: &str = "Subscriptions";

/// `Subscriptions/<name>[/<rest>]` → the subscription name and the rest (case-insensitive segment).
pub fn split_subscription(sub_path: &str) -> Option<(&str, Option<&str>)> {
    let (segment, rest) = sub_path.split_once('/')?;
    if !segment.eq_ignore_ascii_case(SUBSCRIPTIONS) {
        return None;
    }
    match rest.split_once('/') {
        Some((name, more)) => Some((name, Some(more))),
        None => Some((rest, None)),
    }
}

/// What an address names before the queue name is checked: the queue part and an optional sub-path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitAddress<'a> {
    pub queue: &'a str,
    /// Whatever follows the queue name (`$DeadLetterQueue`, `$management`, ...), without the slash.
    pub sub_path: Option<&'a str>,
}

/// The entity path of an address: without `scheme://host[:port]` and surrounding slashes.
pub fn path_of(address: &str) -> &str {
    let path = match address.split_once("://") {
        // The authority runs to the next slash; without one the address names the namespace itself.
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => address,
    };
    path.trim_matches('/')
}

/// Split an address's entity path into the queue name and the rest.
pub fn split_address(address: &str) -> SplitAddress<'_> {
    let path = path_of(address);
    match path.split_once('/') {
        Some((queue, sub)) => SplitAddress {
            queue,
            sub_path: Some(sub.trim_matches('/')),
        },
        None => SplitAddress {
            queue: path,
            sub_path: None,
        },
    }
}

/// Whether a sub-path names the dead-letter queue (case-insensitive, as Service Bus is).
pub fn is_dead_letter(sub_path: &str) -> bool {
    sub_path.eq_ignore_ascii_case(DEAD_LETTER_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalise() {
        let plain = SplitAddress {
            queue: "q",
            sub_path: None,
        };
        for a in [
            "q",
            "/q",
            "q/",
            "amqps://host:5671/q",
            "amqp://127.0.0.1:5672/q",
            "sb://ns.servicebus.windows.net/q",
        ] {
            assert_eq!(split_address(a), plain, "{a}");
        }
        let dlq = SplitAddress {
            queue: "q",
            sub_path: Some("$DeadLetterQueue"),
        };
        for a in [
            "q/$DeadLetterQueue",
            "/q/$DeadLetterQueue",
            "amqps://host/q/$DeadLetterQueue",
        ] {
            assert_eq!(split_address(a), dlq, "{a}");
        }
        assert_eq!(
            split_address("amqps://host"),
            SplitAddress {
                queue: "",
                sub_path: None
            }
        );
        assert_eq!(split_address("q/$management").sub_path, Some("$management"));
        assert_eq!(
            path_of("sb://localhost:5672/q/$DeadLetterQueue/"),
            "q/$DeadLetterQueue"
        );
        assert_eq!(path_of("sb://localhost/"), "");
        assert!(is_dead_letter("$deadletterqueue"));
        assert_eq!(split_subscription("Subscriptions/s"), Some(("s", None)));
        assert_eq!(
            split_subscription("subscriptions/s/$DeadLetterQueue"),
            Some(("s", Some("$DeadLetterQueue")))
        );
        assert_eq!(split_subscription("$DeadLetterQueue"), None);
        assert_eq!(split_subscription("Rules/r"), None);
        assert!(!is_dead_letter("$management"));
    }
}
