"""The Django side of tests/django_interop.rs: Django 5.2 + django-redis with its JSONSerializer,
the cache session engine, and a /cart view, driven one command at a time.

    python peer.py REDIS_URL KEY_PREFIX COMMAND [ARGS...]

Commands print one JSON document on stdout:
    write-cache                 stores values with Django's cache API (and incr)
    read-cache KEY              the value of KEY as Django reads it
    login USER_ID               a new session with that user logged in; prints its key
    read-session SESSION_KEY    the session's data as Django loads it (null: no session)
    cart SESSION_KEY ITEM       GET /cart?add=ITEM with the sessionid cookie (Django's test client)
"""
import json
import sys

import django
from django.conf import settings

redis_url, key_prefix, command, *args = sys.argv[1:]
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="webcache-interop-test-only",
    CACHES={
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": key_prefix,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SERIALIZER": "django_redis.serializers.json.JSONSerializer",
            },
        }
    },
    SESSION_ENGINE="django.contrib.sessions.backends.cache",
    INSTALLED_APPS=["django.contrib.sessions"],
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
)
django.setup()

from django.contrib.sessions.backends.cache import SessionStore  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402


def cart(req):
    items = req.session.get("items", [])
    if "add" in req.GET:
        items.append(req.GET["add"])
        req.session["items"] = items
    return JsonResponse({"items": items, "user": req.session.get("_auth_user_id")})


urlpatterns = [path("cart", cart)]

if command == "write-cache":
    cache.set("from_django", {"name": "Zo\u00eb", "list": [1, 2.5, None, True], "nested": {"a": "b"}}, 60)
    cache.set("count", 41, 60)
    cache.incr("count")
    cache.set("text", "42", 60)
    print(json.dumps(None))
elif command == "read-cache":
    print(json.dumps(cache.get(args[0], "<missing>")))
elif command == "login":
    s = SessionStore()
    s["_auth_user_id"] = args[0]
    s["items"] = ["from-django"]
    s.create()
    print(json.dumps(s.session_key))
elif command == "read-session":
    s = SessionStore(session_key=args[0])
    data = s.load()
    print(json.dumps(data if s.session_key else None))
elif command == "cart":
    client = Client()
    client.cookies["sessionid"] = args[0]
    response = client.get("/cart", {"add": args[1]})
    body = json.loads(response.content)
    body["sessionid"] = client.cookies["sessionid"].value
    print(json.dumps(body))
else:
    sys.exit(f"unknown command {command}")
