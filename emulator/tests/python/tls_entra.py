"""The production path with the official Python SDK: TLS and an Entra ID token, against the emulator.

Usage: python tls_entra.py
Environment:
  SB_FQDN          the namespace name, as in Azure (token audiences, the AMQP open hostname)
  SB_ENDPOINT      where to connect: sb://localhost:<the emulator's TLS port> (the SDK's custom endpoint)
  SB_CA_FILE       the PEM of the CA that signed the emulator's certificate (the SDK's connection_verify)
  SB_JWT, SB_JWT_EXP  the token a managed identity would get, and its expiry (unix seconds)
  SB_QUEUE         the queue

Sends one message and receives and completes it; prints one JSON object on the last line of stdout
with the body and the scopes the SDK asked the credential for.
"""

import json
import os

from azure.core.credentials import AccessToken
from azure.servicebus import ServiceBusClient, ServiceBusMessage, TransportType

QUEUE = os.environ["SB_QUEUE"]


class ManagedIdentityStandIn:
    """A TokenCredential handing out the test's JWT, recording the scopes it is asked for."""

    def __init__(self):
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return AccessToken(os.environ["SB_JWT"], int(os.environ["SB_JWT_EXP"]))


def main():
    credential = ManagedIdentityStandIn()
    with ServiceBusClient(
        os.environ["SB_FQDN"],
        credential,
        custom_endpoint_address=os.environ["SB_ENDPOINT"],
        # With a custom endpoint the SDK defaults to AMQP over WebSockets; Azure's 5671 is plain TLS.
        transport_type=TransportType.Amqp,
        connection_verify=os.environ["SB_CA_FILE"],
    ) as sb:
        with sb.get_queue_sender(QUEUE) as sender:
            sender.send_messages(ServiceBusMessage("over tls with an entra token"))
        with sb.get_queue_receiver(QUEUE) as receiver:
            got = receiver.receive_messages(max_message_count=1, max_wait_time=5)
            assert len(got) == 1, f"expected one message, got {len(got)}"
            receiver.complete_message(got[0])
    print(json.dumps({"body": b"".join(got[0].body).decode(), "scopes": sorted(set(credential.scopes))}))


if __name__ == "__main__":
    main()
