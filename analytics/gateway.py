"""The driver JVM in a session of its own, so a stop request reaches Python first.

A process supervisor stops a service by signalling its whole process group (tools.supervise,
honcho, ``docker stop`` through a shell). pyspark starts the driver JVM in the Python
process's group and shields it from SIGINT only, so a SIGTERM killed the JVM at once, and the
job's own handler (stop after the current micro-batch, exit 0) then found no JVM to talk to.
Started here in a new session, the JVM hears nothing but Python: the job stops its query
cleanly and the JVM goes with it. It still dies with Python if Python is killed outright: it
watches its stdin pipe, which closes when Python exits.
"""

from __future__ import annotations

import logging
import os
import sys

from py4j.protocol import Py4JError
from pyspark import SparkConf, SparkContext
from pyspark.java_gateway import launch_gateway
from pyspark.sql import SparkSession

log = logging.getLogger("analytics")


def start_detached_gateway(conf: dict[str, str]) -> None:
    """Start the driver JVM (with ``conf``) in its own session, unless a JVM is already up
    or spark-submit started one (``PYSPARK_GATEWAY_PORT``: then spark-submit owns it)."""
    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    spark_conf = SparkConf(loadDefaults=False)
    for key, value in conf.items():
        spark_conf.set(key, value)
    gateway = launch_gateway(spark_conf, popen_kwargs={"start_new_session": True})
    SparkContext._ensure_initialized(gateway=gateway)


def open_session(conf: dict[str, str]) -> SparkSession:
    """A SparkSession from ``conf`` (both jobs' session): loopback driver in local mode, the
    JVM detached as above, Spark's own logs at WARN."""
    if conf.get("spark.master", "").startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # driver and UI on loopback only
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    start_detached_gateway(conf)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    quiet_falling_behind(spark)
    return spark


FALLING_BEHIND = ("org.apache.spark.sql.execution.streaming.runtime.ProcessingTimeExecutor",
                  "org.apache.spark.sql.execution.streaming.ProcessingTimeExecutor")
"""Spark's logger of "Current batch is falling behind" (Spark 4's package, then 3's)."""


def quiet_falling_behind(spark: SparkSession) -> None:
    """Spark warns on every micro-batch longer than the trigger interval: at the events job's
    1 s on 2 cores, a line a second. The jobs' progress summary (analytics.progress) says it
    once a minute instead, with how many batches were late."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        level = jvm.org.apache.logging.log4j.Level.ERROR
        for name in FALLING_BEHIND:
            jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, level)
    except (Py4JError, TypeError) as exc:  # a cluster whose Spark logs without log4j 2
        log.debug("Spark's falling-behind warnings stay on: %s", exc)
