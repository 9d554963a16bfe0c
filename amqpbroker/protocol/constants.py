"""Wire constants of AMQP 0-9-1."""
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_END_BYTE = b"\xce"
FRAME_OVERHEAD = 8          # 7-byte header + end byte
FRAME_MIN_SIZE = 4096       # spec: frame_max may not be negotiated below this

# (class_id, method_id) of the hot path
PUBLISH = (60, 40)
ACK = (60, 80)
REJECT = (60, 90)
NACK = (60, 120)
# ours, not AMQP 0-9-1's: basic.modify, a reject of one delivery whose message goes on with new
# properties (delivery tag, requeue bit, the properties as a long string). Only the AMQP 1.0
# adapter's connections may send it (its ``modified`` outcome, amqp10/connection.py); from any
# other client it is an unknown method, as RabbitMQ answers one.
MODIFY = (60, 200)

DEFAULT_FRAME_MAX = 131072
DEFAULT_CHANNEL_MAX = 2047
DEFAULT_HEARTBEAT = 60
DEFAULT_MAX_MESSAGE_SIZE = 128 * 1024 * 1024   # RabbitMQ's max_message_size default
