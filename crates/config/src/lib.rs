//! Configuration in rtslib-fb's saveconfig.json schema: parse, validate, save
//! atomically.
