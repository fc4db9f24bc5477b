/*
 * The ceiling of any analytics job, for bench.analytics' "one pass" rows: the fewest steps
 * that still produce the job's windows, all in the JVM. Not used by the job.
 *
 * Each Kafka partition is read once: the record's bytes go to Jackson's byte parser, which
 * keeps only the fields the windows read (no contract checks: a record without a vehicle id,
 * a timestamp or a speed is merely counted as malformed), and each event is added to a hash
 * map of partial aggregates per (window end, vehicle, road type). A partition yields its
 * partials and one stats row ("s": records, malformed, latest event time). Spark then merges
 * the partials into the job's two datasets.
 *
 * With finish = false a partial carries its samples (time, seq, fuel) so the merge computes
 * the fuel used exactly, whatever partition a car's events were in, as the job does. With
 * finish = true each partial's fuel used is computed here, and the merge adds them up: right
 * only when all of a window's events of a car are in one partition (the producer's keying),
 * so a lower bound on what an exact job can cost.
 *
 * Compiled by bench.analytics with javac against pyspark's own jars.
 */
package fleetstream.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Objects;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;

public final class OnePass implements MapPartitionsFunction<Row, Row> {
    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();

    private static final StructType COMMON = new StructType()
        .add("kind", DataTypes.StringType).add("window_end", DataTypes.LongType)
        .add("vehicle_id", DataTypes.StringType).add("road_type", DataTypes.StringType)
        .add("n", DataTypes.LongType).add("speed_sum", DataTypes.DoubleType)
        .add("speed_max", DataTypes.DoubleType).add("speeding", DataTypes.LongType)
        .add("redline", DataTypes.LongType).add("odo_min", DataTypes.DoubleType)
        .add("odo_max", DataTypes.DoubleType);
    /** Partials with their samples, for an exact merge. A stats row: kind "s", window_end the
     *  latest event time (µs), n the records, speeding the malformed ones. */
    public static final StructType SAMPLES = COMMON
        .add("ts", DataTypes.createArrayType(DataTypes.LongType))
        .add("seq", DataTypes.createArrayType(DataTypes.LongType))
        .add("fuel", DataTypes.createArrayType(DataTypes.DoubleType));
    /** Partials with their fuel used already summed. */
    public static final StructType FINISHED = COMMON.add("fuel_used", DataTypes.DoubleType);

    private final long windowUs;
    private final boolean finish;

    public OnePass(long windowUs, boolean finish) {
        this.windowUs = windowUs;
        this.finish = finish;
    }

    /** The partials of a Kafka source's records (its binary value column). */
    public static Dataset<Row> partials(Dataset<Row> kafka, long windowUs, boolean finish) {
        return kafka.select("value").mapPartitions(new OnePass(windowUs, finish),
                                                   Encoders.row(finish ? FINISHED : SAMPLES));
    }

    private static final class Key {
        final long windowEnd;
        final String vehicle;
        final String road;
        final int hash;

        Key(long windowEnd, String vehicle, String road) {
            this.windowEnd = windowEnd;
            this.vehicle = vehicle;
            this.road = road;
            this.hash = Objects.hash(windowEnd, vehicle, road);
        }

        @Override public int hashCode() {
            return hash;
        }

        @Override public boolean equals(Object o) {
            return o instanceof Key k && k.windowEnd == windowEnd && k.vehicle.equals(vehicle)
                && k.road.equals(road);
        }
    }

    private static final class Partial {
        int n;
        long speeding;
        long redline;
        double speedSum;
        double speedMax = Double.NEGATIVE_INFINITY;
        double odoMin = Double.POSITIVE_INFINITY;
        double odoMax = Double.NEGATIVE_INFINITY;
        long[] ts = new long[8];
        long[] seq = new long[8];
        double[] fuel = new double[8];

        void add(long t, long s, double f, double speed, double odo, boolean fast, boolean red) {
            if (n == ts.length) {
                ts = Arrays.copyOf(ts, n * 2);
                seq = Arrays.copyOf(seq, n * 2);
                fuel = Arrays.copyOf(fuel, n * 2);
            }
            ts[n] = t;
            seq[n] = s;
            fuel[n] = f;
            n++;
            speedSum += speed;
            speedMax = Math.max(speedMax, speed);
            odoMin = Math.min(odoMin, odo);
            odoMax = Math.max(odoMax, odo);
            speeding += fast ? 1 : 0;
            redline += red ? 1 : 0;
        }

        /** The sum of the fuel level's drops between consecutive samples by (time, seq). */
        double fuelUsed() {
            Integer[] order = new Integer[n];
            for (int i = 0; i < n; i++) {
                order[i] = i;
            }
            Arrays.sort(order, (a, b) -> ts[a] != ts[b] ? Long.compare(ts[a], ts[b])
                                                         : Long.compare(seq[a], seq[b]));
            double used = 0;
            for (int i = 1; i < n; i++) {
                used += Math.max(fuel[order[i - 1]] - fuel[order[i]], 0);
            }
            return used;
        }
    }

    @Override
    public Iterator<Row> call(Iterator<Row> rows) {
        HashMap<Key, Partial> partials = new HashMap<>();
        long records = 0;
        long malformed = 0;
        long latest = Long.MIN_VALUE;
        while (rows.hasNext()) {
            byte[] value = (byte[]) rows.next().get(0);
            records++;
            String vehicle = null;
            String road = "urban";
            String time = null;
            double speed = Double.NaN;
            double odo = 0;
            double fuel = 0;
            long seq = 0;
            boolean fast = false;
            boolean red = false;
            long us;
            try (JsonParser p = JSON.createParser(value)) {
                if (p.nextToken() != JsonToken.START_OBJECT) {
                    malformed++;
                    continue;
                }
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.currentName();
                    JsonToken t = p.nextToken();
                    switch (name) {
                        case "vehicle_id" -> vehicle = p.getText();
                        case "timestamp" -> time = p.getText();
                        case "speed_kmh" -> speed = p.getDoubleValue();
                        case "odometer_km" -> odo = p.getDoubleValue();
                        case "fuel_level_pct" -> fuel = p.getDoubleValue();
                        case "seq" -> seq = p.getLongValue();
                        case "road_type" -> road = p.getText();
                        case "speeding" -> fast = t == JsonToken.VALUE_TRUE;
                        case "rpm_over_redline" -> red = t == JsonToken.VALUE_TRUE;
                        default -> p.skipChildren();
                    }
                }
                if (vehicle == null || time == null || Double.isNaN(speed)) {
                    malformed++;
                    continue;
                }
                OffsetDateTime at = OffsetDateTime.parse(time);
                us = at.toEpochSecond() * 1_000_000L + at.getNano() / 1000;
            } catch (Exception e) {  // not JSON, a value of another type, a bad time
                malformed++;
                continue;
            }
            latest = Math.max(latest, us);
            long end = (Math.floorDiv(us, windowUs) + 1) * windowUs;
            partials.computeIfAbsent(new Key(end, vehicle, road), k -> new Partial())
                .add(us, seq, fuel, speed, odo, fast, red);
        }
        List<Row> out = new ArrayList<>(partials.size() + 1);
        Object[] stats = new Object[finish ? FINISHED.size() : SAMPLES.size()];
        stats[0] = "s";
        stats[1] = latest;
        stats[4] = records;
        stats[7] = malformed;
        out.add(RowFactory.create(stats));
        partials.forEach((k, a) -> {
            Object[] common = {"p", k.windowEnd, k.vehicle, k.road, (long) a.n, a.speedSum,
                               a.speedMax, a.speeding, a.redline, a.odoMin, a.odoMax};
            if (finish) {
                Object[] row = Arrays.copyOf(common, common.length + 1);
                row[common.length] = a.fuelUsed();
                out.add(RowFactory.create(row));
            } else {
                Object[] row = Arrays.copyOf(common, common.length + 3);
                Long[] ts = new Long[a.n];
                Long[] seq = new Long[a.n];
                Double[] fuel = new Double[a.n];
                for (int i = 0; i < a.n; i++) {
                    ts[i] = a.ts[i];
                    seq[i] = a.seq[i];
                    fuel[i] = a.fuel[i];
                }
                row[common.length] = ts;
                row[common.length + 1] = seq;
                row[common.length + 2] = fuel;
                out.add(RowFactory.create(row));
            }
        });
        return out.iterator();
    }
}
