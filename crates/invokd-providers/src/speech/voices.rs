//! ElevenLabs voice names mapped to espeak-ng voices: each known name to a fixed accent and
//! voice variant of its gender, any other name to a variant chosen by a hash of the name, so a
//! voice always sounds the same. The table is documented in the README ("Real speech offline").

use sha2::{Digest, Sha256};

/// The ElevenLabs premade voices: name, espeak-ng accent, variant (`f1`-`f5` female,
/// `m1`-`m7` male, as espeak-ng ships them).
const KNOWN: &[(&str, &str, &str)] = &[
    ("rachel", "en-us", "f1"),
    ("aria", "en-us", "f2"),
    ("sarah", "en-us", "f3"),
    ("laura", "en-us", "f4"),
    ("jessica", "en-us", "f5"),
    ("alice", "en-gb", "f1"),
    ("lily", "en-gb", "f2"),
    ("charlotte", "en-gb", "f3"),
    ("matilda", "en-gb", "f4"),
    ("roger", "en-us", "m1"),
    ("charlie", "en-us", "m2"),
    ("callum", "en-us", "m3"),
    ("liam", "en-us", "m4"),
    ("will", "en-us", "m5"),
    ("eric", "en-us", "m6"),
    ("chris", "en-us", "m7"),
    ("brian", "en-us", "m1"),
    ("bill", "en-us", "m2"),
    ("george", "en-gb", "m3"),
    ("daniel", "en-gb", "m4"),
    ("river", "en-us", "m5"),
];

/// Every variant, for names not in the table.
const VARIANTS: &[&str] = &[
    "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7",
];

/// The accent when neither the voice nor `language_code` names one.
const DEFAULT_ACCENT: &str = "en-us";

/// The espeak-ng voice (`-v`) for an ElevenLabs voice name and an optional ISO 639-1 language
/// code, which replaces the accent (espeak-ng names its languages by those codes).
pub fn espeak_voice(name: &str, language_code: Option<&str>) -> String {
    let name = name.trim().to_ascii_lowercase();
    let (accent, variant) = match KNOWN.iter().find(|(n, ..)| *n == name) {
        Some((_, accent, variant)) => (*accent, *variant),
        None => {
            let digest = Sha256::digest(name.as_bytes());
            (
                DEFAULT_ACCENT,
                VARIANTS[usize::from(digest[0]) % VARIANTS.len()],
            )
        }
    };
    let language = language_code
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_ascii_lowercase);
    format!("{}+{variant}", language.as_deref().unwrap_or(accent))
}

/// Whether `code` can name an espeak-ng language: letters and hyphens only, so it can never be
/// read as an option or a path.
pub fn is_language_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= 16
        && code.chars().all(|c| c.is_ascii_alphabetic() || c == '-')
        && !code.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_voices_keep_their_accent_and_gender() {
        assert_eq!(espeak_voice("Rachel", None), "en-us+f1");
        assert_eq!(espeak_voice("george", None), "en-gb+m3");
        assert_eq!(espeak_voice(" Roger ", Some("de")), "de+m1");
    }

    #[test]
    fn other_names_always_get_the_same_variant() {
        let a = espeak_voice("Some Custom Voice", None);
        assert_eq!(a, espeak_voice("some custom voice", None));
        assert!(a.starts_with("en-us+"));
        assert!(VARIANTS.iter().any(|v| a.ends_with(v)));
    }

    #[test]
    fn language_codes_cannot_smuggle_options() {
        assert!(is_language_code("pt-br"));
        assert!(!is_language_code("-w"));
        assert!(!is_language_code("../x"));
        assert!(!is_language_code(""));
    }
}
