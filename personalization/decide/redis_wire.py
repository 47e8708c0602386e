"""A bare Redis connection for decide's one round trip per request (no Django).

redis-py's connection adds ~25-55 µs of Python per round trip on top of the two system calls
(command packing, checks, parser wrapper), which is a sixth of a decide request's CPU
(bench/decide.py). This one packs RESP by hand, sends it with one sendall and parses replies with
hiredis, the same C parser redis-py uses. Failures are raised as redis-py's exceptions so callers
handle one family of errors.
"""

import contextlib
import socket

import hiredis
import redis


def command_pack(*commands: tuple) -> bytes:
    """RESP for several commands, e.g. command_pack(("HGETALL", "k"), ("GET", "v"))."""
    out = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            raw = arg if isinstance(arg, bytes) else str(arg).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class Connection:
    """One socket, used by one thread at a time. Any failure closes it; the next call reconnects."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 0.2,
        timeout: float = 0.25,
    ):
        self.address = path or (host, port)
        self.setup = []
        if password:
            self.setup.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self.setup.append(("SELECT", db))
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self.sock: socket.socket | None = None
        self.reader: hiredis.Reader | None = None

    @classmethod
    def like(cls, client: redis.Redis) -> "Connection":
        """A connection to the same server, database and credentials as a redis-py client."""
        kw = client.connection_pool.connection_kwargs
        return cls(
            host=kw.get("host", "127.0.0.1"),
            port=kw.get("port", 6379),
            path=kw.get("path"),
            db=int(kw.get("db") or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            connect_timeout=kw.get("socket_connect_timeout") or 0.2,
            timeout=kw.get("socket_timeout") or 0.25,
        )

    def _connect(self) -> None:
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout)
                sock.connect(self.address)
            else:
                sock = socket.create_connection(self.address, timeout=self.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise redis.ConnectionError(f"cannot connect to Redis at {self.address}: {exc}") from exc
        sock.settimeout(self.timeout)
        self.sock, self.reader = sock, hiredis.Reader()
        if self.setup:
            self._exchange(command_pack(*self.setup), len(self.setup))

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.sock = self.reader = None

    def execute(self, *commands: tuple) -> list:
        """Send the commands in one write and return their replies, in order."""
        if self.sock is None:
            self._connect()
        return self._exchange(command_pack(*commands), len(commands))

    def _exchange(self, packed: bytes, count: int) -> list:
        try:
            self.sock.sendall(packed)
            replies = []
            while len(replies) < count:
                reply = self.reader.gets()
                if reply is False:
                    data = self.sock.recv(65536)
                    if not data:
                        raise redis.ConnectionError("Redis closed the connection")
                    self.reader.feed(data)
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    raise redis.ResponseError(str(reply))
                replies.append(reply)
            return replies
        except TimeoutError as exc:
            self.close()
            raise redis.TimeoutError(f"Redis did not answer within {self.timeout} s") from exc
        except OSError as exc:
            self.close()
            raise redis.ConnectionError(f"Redis connection failed: {exc}") from exc
        except BaseException:
            self.close()  # never leave a half-read reply for the next request
            raise
