//! The federation view of an activity body: parsed natively, once per request.
