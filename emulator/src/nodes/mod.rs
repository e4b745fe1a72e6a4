//! `$cbs` and `$management` nodes. TO BE WRITTEN (amqp helper).
