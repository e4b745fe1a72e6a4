//! `/health` and `/queues/{name}`. TO BE WRITTEN (amqp helper).
