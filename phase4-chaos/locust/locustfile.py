"""FerrisEats phase 4: the request mix of `phase4-chaos load`, for Locust users.

    cargo run -p phase4-chaos -- all                     # the platform behind the gateway
    locust -f phase4-chaos/locust/locustfile.py --host http://127.0.0.1:3000

Each virtual customer signs in with a token of its own (HS256, the gateway's key from
GATEWAY_JWT_KEY, minted here with the standard library so that nothing but Locust
needs installing), then browses the menu, places orders with an Idempotency-Key,
polls the status of what it placed and now and then sends the same order twice —
the weights of `phase4-chaos load`'s default mix (menu 30, place 40, status 25,
duplicate 5).

Locust runs a *closed* model: each user waits for its answer (and `wait_time`)
before its next request, so a slow server is offered less — the coordinated
omission that `phase4-chaos load`'s open model avoids. Compare the two.
"""

import base64
import hashlib
import hmac
import json
import os
import random
import time
import uuid

from locust import HttpUser, between, task

DEVELOPMENT_KEY = "ferriseats-development-key-32-by"  # the gateway's default
SKUS = ["pizza-margherita", "burger-classic", "cola", "fries"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(customer: str, key: str, ttl_s: int = 3600) -> str:
    """An HS256 JWT as the gateway expects it: sub, iss=ferriseats, iat, exp."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(
        json.dumps({"sub": customer, "iss": "ferriseats", "iat": now, "exp": now + ttl_s}).encode()
    )
    signing_input = f"{header}.{claims}".encode()
    signature = hmac.new(key.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64(signature)}"


class Customer(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self):
        key = os.environ.get("GATEWAY_JWT_KEY", DEVELOPMENT_KEY)
        self.customer = f"locust-{uuid.uuid4().hex[:12]}"
        self.auth = {"authorization": f"Bearer {mint(self.customer, key)}"}
        self.placed = []  # Location paths of this customer's orders
        self.sent = []  # (body, key) of orders sent, for duplicates

    def _order(self, body, key):
        headers = dict(self.auth, **{"idempotency-key": key})
        with self.client.post("/orders", json=body, headers=headers, name="place",
                              catch_response=True) as response:
            if response.status_code in (200, 201, 202):
                location = response.headers.get("location")
                if location:
                    self.placed.append(location)
                response.success()
            elif response.status_code in (429, 503):
                # Refused on purpose, with Retry-After: not an error of the platform.
                response.success()
            else:
                response.failure(f"{response.status_code}: {response.text[:200]}")

    @task(30)
    def menu(self):
        self.client.get("/menu", headers=self.auth, name="menu")

    @task(40)
    def place(self):
        lines = random.sample(SKUS, random.choice([1, 2]))
        body = {"items": [{"sku": sku, "qty": random.randint(1, 3)} for sku in lines]}
        key = str(uuid.uuid4())
        self.sent.append((body, key))
        self._order(body, key)

    @task(25)
    def status(self):
        if not self.placed:
            return self.menu()
        self.client.get(random.choice(self.placed), headers=self.auth, name="status")

    @task(5)
    def duplicate(self):
        if not self.sent:
            return self.menu()
        body, key = random.choice(self.sent)
        self._order(body, key)
