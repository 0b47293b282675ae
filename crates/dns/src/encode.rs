//! A response as sections of records, encoded within a size limit.
//!
//! hickory's own `Message::to_vec` would cut every section alike and set TC when the additional
//! section does not fit, and it would let the OPT record fall off. RFC 2181 §9 asks for TC only
//! when the answer itself is cut, and RFC 6891 for an OPT in every answer to an EDNS query, so
//! the sections are written here one by one: room is kept for the OPT record, the answer section
//! is cut at a whole record (and then TC is set and nothing else follows: the client will ask
//! over TCP), and the additional section is filled as far as it goes.

use hickory_proto::ProtoError;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, Query};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};

/// A response before encoding.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) metadata: Metadata,
    pub(crate) query: Option<Query>,
    pub(crate) answers: Vec<Record>,
    pub(crate) authorities: Vec<Record>,
    pub(crate) additionals: Vec<Record>,
    pub(crate) edns: Option<Edns>,
}

impl Reply {
    pub(crate) fn new(metadata: Metadata) -> Reply {
        Reply { metadata, query: None, answers: vec![], authorities: vec![], additionals: vec![], edns: None }
    }

    /// The wire form, at most `limit` bytes (at least 512: a header, a question and an SOA always
    /// fit, since a name is at most 255 bytes).
    pub(crate) fn encode(&self, limit: u16) -> Vec<u8> {
        let mut buffer = Vec::with_capacity(usize::from(limit).min(1232));
        match self.encode_into(&mut buffer, limit) {
            Ok(()) => buffer,
            // Only an unencodable record could fail, and every record here comes from a parsed
            // query or the checked zone; still, a header saying SERVFAIL beats a panic.
            Err(error) => {
                tracing::warn!(%error, "DNS response not encodable, answering SERVFAIL");
                server_failure(self.metadata)
            }
        }
    }

    fn encode_into(&self, buffer: &mut Vec<u8>, limit: u16) -> Result<(), ProtoError> {
        let opt = self.edns.as_ref().map(|edns| {
            let mut edns = edns.clone();
            edns.set_rcode_high(self.metadata.response_code.high());
            Record::from(&edns)
        });
        let mut encoder = BinEncoder::new(buffer);
        // The OPT record has the root as its name and no options: 11 bytes.
        encoder.set_max_size(limit - if opt.is_some() { 11 } else { 0 });
        let header = encoder.place::<Header>()?;
        let mut counts = HeaderCounts { queries: 0, answers: 0, authorities: 0, additionals: 0 };
        if let Some(query) = &self.query {
            query.emit(&mut encoder)?;
            counts.queries = 1;
        }
        let mut metadata = self.metadata;
        let (answers, complete) = emit_section(&mut encoder, &self.answers)?;
        counts.answers = answers;
        if complete {
            counts.authorities = emit_section(&mut encoder, &self.authorities)?.0;
            counts.additionals = emit_section(&mut encoder, &self.additionals)?.0;
        } else {
            metadata.truncation = true;
        }
        encoder.set_max_size(limit);
        if let Some(opt) = &opt {
            opt.emit(&mut encoder)?;
            counts.additionals += 1;
        }
        // A record that did not fit was rolled back by moving the offset; drop its bytes.
        encoder.trim();
        header.replace(&mut encoder, Header { metadata, counts })?;
        Ok(())
    }
}

/// Emits the records that fit, whole; returns how many, and whether that is all of them.
fn emit_section(encoder: &mut BinEncoder<'_>, records: &[Record]) -> Result<(u16, bool), ProtoError> {
    match encoder.emit_all(records.iter()) {
        Ok(count) => Ok((count_u16(count), true)),
        Err(ProtoError::NotAllRecordsWritten { count, .. }) => Ok((count_u16(count), false)),
        Err(error) => Err(error),
    }
}

fn count_u16(count: usize) -> u16 {
    // At most 65535 bytes hold fewer than 65535 records of 11 bytes or more.
    u16::try_from(count).unwrap_or(u16::MAX)
}

/// A bare SERVFAIL header, for the response that cannot be encoded.
fn server_failure(mut metadata: Metadata) -> Vec<u8> {
    metadata.response_code = hickory_proto::op::ResponseCode::ServFail;
    metadata.truncation = false;
    let counts = HeaderCounts { queries: 0, answers: 0, authorities: 0, additionals: 0 };
    let mut buffer = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut buffer);
    // Twelve bytes into a fresh buffer whose limit is 65535 cannot fail.
    let _ = Header { metadata, counts }.emit(&mut encoder);
    buffer
}
