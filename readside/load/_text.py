"""Realistic text for the simulations: names, businesses, chat lines, ticket titles, avatars."""

from __future__ import annotations

import random

__all__ = [
    "BUSINESS",
    "CLIENT_LINES",
    "FIRST",
    "LAST",
    "PLACES",
    "PROVIDER_LINES",
    "TICKET_LINES",
    "TICKET_TITLES",
    "avatar",
    "sentences",
    "user_profile",
]

_PNG_1PX = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
            "rkJggg==")

FIRST = ("Ann", "Bob", "Thandi", "Sipho", "Lerato", "Pieter", "Aisha", "Johan", "Naledi", "Chen",
          "Maria", "David", "Zanele", "Kyle", "Fatima", "Liam", "Ayanda", "Emma", "Ravi", "Olivia")
LAST = ("Lee", "Khumalo", "van der Merwe", "Naidoo", "Dlamini", "Smith", "Botha", "Mokoena",
         "Pillay", "O'Brien", "Nkosi", "Jacobs", "Adams", "Ndlovu", "Fourie", "García")
BUSINESS = ("{f} {l} Events", "DJ {f}", "{l} Sound & Light", "{f}'s Studio", "Sounds by {f}",
             "{l} Photography", "The {l} Collective", "{f} Live")
CLIENT_LINES = (
    "Hi! Are you free on the {day}?", "We're planning a {event} for about {guests} guests.",
    "What would you charge for {hours} hours?", "Do you bring your own equipment?",
    "Could you send a few samples of previous work?", "Great, thanks so much!",
    "The venue is in {place}, is travel included?", "Can we move the start time to {clock}?",
    "Perfect 👍", "Sorry for the late reply, it's been a crazy week.",
    "My partner loved your last set, so we'd really like to book you.",
    "Is a deposit needed to secure the date?", "Would it be possible to add an extra hour on the night?",
)
PROVIDER_LINES = (
    "Hi, thanks for reaching out!", "Yes, I'm available on that date.",
    "My rate is R{rate} per hour, sound equipment included.", "I've attached a quote for you.",
    "Could you share the venue address?", "Sounds good, I'll pencil you in.",
    "Payment secures the booking.", "Looking forward to it!",
    "Travel within {place} is included; further out is charged per km.",
    "I usually arrive an hour early to set up and sound-check.",
    "Let me know if you have a playlist or any must-play songs.",
)
TICKET_TITLES = ("Printer on floor {n} is offline", "Cannot log in to the VPN", "Laptop won't charge",
                  "New starter needs accounts", "Email bouncing for external domain",
                  "Projector in boardroom {n} flickers", "Request access to the finance share",
                  "Wi-Fi drops in building {n}", "Replace broken monitor", "Install design software")
TICKET_LINES = ("It started this morning.", "I've already tried restarting it.",
                 "Could you take a look today? It's blocking the team.",
                 "Can you try again now?", "I've reset it on our side.",
                 "Is this still happening?", "Thanks, that fixed it!", "Still the same, sorry.",
                 "I'll need remote access to your machine, please accept the prompt.",
                 "Screenshot attached.")
_EVENTS = ("wedding", "birthday party", "corporate year-end function", "matric dance", "product launch")
PLACES = ("Cape Town", "Johannesburg", "Durban", "Pretoria", "Stellenbosch", "Gqeberha")


def sentences(rng: random.Random, lines: tuple[str, ...]) -> str:
    count = rng.choices((1, 2, 3, 4, 6), weights=(45, 30, 15, 7, 3))[0]
    text = " ".join(rng.choice(lines) for _ in range(count))
    if "{" in text:
        text = text.format(
            day=f"{rng.randint(1, 28)}th", event=rng.choice(_EVENTS), guests=rng.randrange(20, 400, 10),
            hours=rng.randint(2, 8), place=rng.choice(PLACES), clock=f"{rng.randint(14, 20)}:00",
            rate=rng.randrange(800, 5000, 50), n=rng.randint(1, 6))
    roll = rng.random()
    if roll < 0.06:  # people press enter twice and pad with spaces
        text = text.replace(". ", ".\n\n", 1).replace("? ", "?  \n", 1)
    elif roll < 0.10:
        text = f"  {text}   "
    return text


def user_profile(uid: str) -> tuple[str, str | None, str | None]:
    """A user's (name, business_name, avatar_url): the same for a user id in every stream."""
    rng = random.Random(f"user:{uid}")
    first, last = rng.choice(FIRST), rng.choice(LAST)
    business = None if rng.random() < 0.35 else rng.choice(BUSINESS).format(f=first, l=last)
    return f"{first} {last}", business, avatar(rng, uid)


def avatar(rng: random.Random, owner: str) -> str | None:
    roll = rng.random()
    if roll < 0.25:
        return None
    if roll < 0.40:
        return f"data:image/png;base64,{_PNG_1PX}"
    return f"https://cdn.example/avatars/{owner}.jpg"

