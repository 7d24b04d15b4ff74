"""twistd plugin: ``twistd socketeer -c socketeer.properties``."""

from twisted.application.service import ServiceMaker

Socketeer = ServiceMaker(
    "Socketeer",
    "socketeer.tap",
    "An application-level TCP tunnel through a STOMP broker (sources, sinks, embedded broker).",
    "socketeer",
)
