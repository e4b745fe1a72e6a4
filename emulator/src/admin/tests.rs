//! The API without sockets: requests built as hyper `Parts`, answers compared with recorded shapes.
