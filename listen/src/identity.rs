//! The identity of a peer that mutual TLS verified: the subject common name and the
//! subject alternative names of its certificate, as `status` shows them.

use rustls::pki_types::CertificateDer;

/// Who a verified client certificate says its holder is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject common name (`CN=`), if the subject has one.
    pub common_name: Option<String>,
    /// DNS and URI subject alternative names, in certificate order (DNS first).
    pub names: Vec<String>,
}

/// The identity in a peer's end-entity certificate, or `None` when it does not parse (it
/// was verified by then, so that would be a certificate webpki accepts and we do not).
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut names: Vec<String> = cert.valid_dns_names().map(str::to_string).collect();
    names.extend(cert.valid_uri_names().map(str::to_string));
    Some(PeerIdentity {
        common_name: common_name(cert.subject()),
        names,
    })
}

/// OID 2.5.4.3 (id-at-commonName), DER-encoded.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];

/// The first common name in a DER `Name`, given as the contents of its SEQUENCE: a list of
/// SETs of `AttributeTypeAndValue` SEQUENCEs. webpki hands out the subject only as bytes.
fn common_name(subject: &[u8]) -> Option<String> {
    let mut rdns = subject;
    while let Some((tag, rdn, rest)) = tlv(rdns) {
        rdns = rest;
        if tag != 0x31 {
            return None;
        }
        let mut attributes = rdn;
        while let Some((tag, attribute, rest)) = tlv(attributes) {
            attributes = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = tlv(attribute)?;
            if oid_tag != 0x06 || oid != COMMON_NAME_OID {
                continue;
            }
            let (value_tag, value, _) = tlv(value)?;
            // UTF8String, PrintableString, IA5String, TeletexString: all ASCII-compatible
            // for the names anyone puts in a CN; BMPString and the rest are not read.
            if matches!(value_tag, 0x0c | 0x13 | 0x16 | 0x14) {
                return std::str::from_utf8(value).ok().map(str::to_string);
            }
            return None;
        }
    }
    None
}

/// Splits one DER tag-length-value off the front: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, rest) = input.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    if input.len() < len {
        return None;
    }
    let (contents, rest) = input.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_among_other_attributes() {
        // SET { SEQ { OID 2.5.4.10, UTF8 "org" } }, SET { SEQ { OID 2.5.4.3, UTF8 "dp-1" } }
        let subject = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x03, b'o', b'r', b'g',
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x04, b'd', b'p', b'-',
            b'1',
        ];
        assert_eq!(common_name(&subject).as_deref(), Some("dp-1"));
    }

    #[test]
    fn no_common_name_or_broken_der_gives_none() {
        let only_org = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x03, b'o', b'r', b'g',
        ];
        assert_eq!(common_name(&only_org), None);
        assert_eq!(common_name(&[0x31, 0x7f, 0x30]), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn long_form_lengths_parse() {
        let mut input = vec![0x04, 0x81, 0x80];
        input.extend(std::iter::repeat_n(7u8, 0x80));
        input.push(0xff);
        let (tag, contents, rest) = tlv(&input).expect("parses");
        assert_eq!((tag, contents.len(), rest), (0x04, 0x80, &[0xff][..]));
    }
}
