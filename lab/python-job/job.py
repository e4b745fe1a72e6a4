"""The tutorial's Python job: receive messages from a Service Bus queue, process them, complete them.

Container Apps starts it when KEDA sees messages on the queue. It reads the same environment as the
tutorial's job (and as the Rust job, servicebus-job):

  SERVICEBUS_FQDN              namespace host, e.g. mylab.servicebus.windows.net (Azure)
  MANAGED_IDENTITY_CLIENT_ID   client id of the user-assigned identity (Azure; without it the
                               default Azure credential chain is used, e.g. `az login`)
  SERVICEBUS_CONNECTION_STRING instead of the two above (the lab's emulator:
                               ...;UseDevelopmentEmulator=true)
  SERVICEBUS_QUEUE_NAME        the queue to receive from
  MAX_MESSAGES                 messages to process before exiting; 0 = until the queue stays empty
                               for MAX_WAIT (default 1, one message per execution as in the tutorial)
  MAX_WAIT                     how long to wait for a message, e.g. 5s or 500ms (default 5s)

Peek-lock: a message is completed only after it was processed, so a crash leaves it for the next
execution. SIGTERM (Container Apps at the replica timeout) abandons the message in hand and exits.
"""

import os
import signal
import sys
import time

from azure.servicebus import ServiceBusClient, ServiceBusReceiveMode

EXIT_CONFIG = 2


def fail(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG)


def duration_seconds(name, default):
    text = os.environ.get(name, "").strip() or default
    try:
        if text.endswith("ms"):
            return float(text[:-2]) / 1000
        if text.endswith("s"):
            return float(text[:-1])
        if text.endswith("m"):
            return float(text[:-1]) * 60
        return float(text)
    except ValueError:
        fail(f"{name}={text!r} is not a duration; write e.g. 5s, 500ms or 2m")


def client_from_env():
    connection_string = os.environ.get("SERVICEBUS_CONNECTION_STRING", "").strip()
    fqdn = os.environ.get("SERVICEBUS_FQDN", "").strip()
    if connection_string and fqdn:
        fail("set SERVICEBUS_FQDN or SERVICEBUS_CONNECTION_STRING, not both")
    if connection_string:
        return ServiceBusClient.from_connection_string(connection_string), "connection string"
    if not fqdn:
        fail(
            "set SERVICEBUS_FQDN (with MANAGED_IDENTITY_CLIENT_ID on Azure) or "
            "SERVICEBUS_CONNECTION_STRING (the lab's emulator)"
        )
    # Imported here: the emulator path needs no identity library at start-up.
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    client_id = os.environ.get("MANAGED_IDENTITY_CLIENT_ID", "").strip()
    if client_id:
        credential, how = ManagedIdentityCredential(client_id=client_id), "managed identity"
    else:
        credential, how = DefaultAzureCredential(), "default Azure credential"
    return ServiceBusClient(fully_qualified_namespace=fqdn, credential=credential), how


def main():
    queue = os.environ.get("SERVICEBUS_QUEUE_NAME", "").strip()
    if not queue:
        fail("set SERVICEBUS_QUEUE_NAME=<queue name> (the lab's queue is queue-messages)")
    try:
        max_messages = int(os.environ.get("MAX_MESSAGES", "").strip() or "1")
    except ValueError:
        fail("MAX_MESSAGES must be a whole number (0 = until the queue stays empty)")
    max_wait = duration_seconds("MAX_WAIT", "5s")

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))

    started = time.monotonic()
    completed = abandoned = 0
    client, how = client_from_env()
    print(f"receiving from {queue} ({how}), max_messages={max_messages}", flush=True)
    with client:
        with client.get_queue_receiver(
            queue_name=queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK, max_wait_time=max_wait
        ) as receiver:
            while not stopping and (max_messages == 0 or completed < max_messages):
                # Up to 20 at a time (the Rust job's prefetch), never more than are still wanted.
                want = 20 if max_messages == 0 else min(max_messages - completed, 20)
                messages = receiver.receive_messages(max_message_count=want, max_wait_time=max_wait)
                if not messages:
                    break
                for message in messages:
                    if stopping:
                        receiver.abandon_message(message)
                        abandoned += 1
                        continue
                    body = b"".join(message.body) if not isinstance(message.body, bytes) else message.body
                    print(
                        f"received message {message.message_id} (delivery {message.delivery_count}, "
                        f"{len(body)} bytes, {message.content_type or 'no content type'})",
                        flush=True,
                    )
                    receiver.complete_message(message)
                    completed += 1
    elapsed = time.monotonic() - started
    print(f"completed {completed} message(s), abandoned {abandoned} in {elapsed:.2f} s", flush=True)
    return 143 if stopping else 0


if __name__ == "__main__":
    sys.exit(main())
