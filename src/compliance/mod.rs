//! Compliance evidence generated from what the service enforces, so it
//! cannot drift from it: the record of processing activities (GDPR Art. 30)
//! and the inputs of a personal information protection impact assessment
//! (PIPL Art. 55–56), from the policy files in force.

pub mod records;

pub use records::ProcessingRecord;
