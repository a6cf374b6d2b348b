//! The pure core: what an event is, how it is minimized into a coarse
//! record, and how the methodology turns a coarse record into grams and
//! points. No I/O here.

mod coarse;
mod day;
mod event;
mod ids;
pub mod methodology;
mod minimize;

pub use coarse::{CoarseRecord, Milligrams};
pub use day::{month_label, Day};
pub use event::{escape_pointer, event_id_of, parse_event, scrub, FieldError, FieldProblem, RawEvent};
pub use ids::{EventId, Role, SubjectId, TenantId};
pub use methodology::{Assessment, DailyUsage, Methodology};
pub use minimize::minimize;
