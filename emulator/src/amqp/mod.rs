//! Frame codec and connection engine. TO BE WRITTEN (amqp helper).
