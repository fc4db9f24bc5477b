/*
 * A byte-level JSON parser for bench.analytics' "bytes" stage: what parsing the telemetry
 * JSON costs inside Spark when the record's UTF-8 bytes go straight to Jackson's byte parser,
 * rather than through the Reader that from_json builds per record. Not used by the job.
 *
 * A Spark Java UDF (binary -> struct), driven by the schema it is given as JSON, so it
 * yields the same struct as from_json(value, schema) in PERMISSIVE mode for well-formed
 * records: a field of the wrong JSON type is null and the record's corrupt column is set.
 * Compiled by bench.analytics with javac against pyspark's own jars.
 */
package fleetstream.bench;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.sql.Timestamp;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DoubleType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.types.TimestampType;

public final class ByteJsonParser implements UDF1<byte[], Row> {
    private static final long serialVersionUID = 1L;
    private static final JsonFactory JSON = new JsonFactory();

    /** Thrown on a value of the wrong JSON type: the field is null, the record corrupt. */
    private static final class WrongType extends Exception {
        private static final long serialVersionUID = 1L;
        WrongType() { super(null, null, false, false); }
    }

    private final StructType schema;
    private final String corrupt;
    private transient Map<StructType, Map<String, Integer>> index;

    /** @param schemaJson the struct's DataType.json(); its field named corrupt gets the text
     *  of a record that is not a well-formed object of the schema's types. */
    public ByteJsonParser(String schemaJson, String corrupt) {
        this.schema = (StructType) DataType.fromJson(schemaJson);
        this.corrupt = corrupt;
    }

    @Override
    public Row call(byte[] value) {
        if (value == null) {
            return null;
        }
        boolean[] bad = {false};
        Object[] out;
        try (JsonParser p = JSON.createParser(value)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return corruptRow(value);
            }
            out = struct(p, schema, bad);
            if (p.nextToken() != null) {
                return corruptRow(value);
            }
        } catch (IOException | RuntimeException e) {
            return corruptRow(value);
        }
        if (bad[0]) {
            out[schema.fieldIndex(corrupt)] = new String(value, java.nio.charset.StandardCharsets.UTF_8);
        }
        return RowFactory.create(out);
    }

    private Row corruptRow(byte[] value) {
        Object[] out = new Object[schema.size()];
        out[schema.fieldIndex(corrupt)] = new String(value, java.nio.charset.StandardCharsets.UTF_8);
        return RowFactory.create(out);
    }

    private Map<String, Integer> fields(StructType type) {
        if (index == null) {
            index = new HashMap<>();
        }
        return index.computeIfAbsent(type, t -> {
            Map<String, Integer> m = new HashMap<>();
            StructField[] fs = t.fields();
            for (int i = 0; i < fs.length; i++) {
                m.put(fs[i].name(), i);
            }
            return m;
        });
    }

    /** The object the parser is in (after its START_OBJECT), up to its END_OBJECT. */
    private Object[] struct(JsonParser p, StructType type, boolean[] bad) throws IOException {
        Object[] out = new Object[type.size()];
        Map<String, Integer> names = fields(type);
        while (p.nextToken() == JsonToken.FIELD_NAME) {
            Integer i = names.get(p.currentName());
            JsonToken t = p.nextToken();
            if (i == null || type.fields()[i].name().equals(corrupt)) {
                p.skipChildren();
                continue;
            }
            try {
                out[i] = value(p, t, type.fields()[i].dataType(), bad);
            } catch (WrongType e) {
                p.skipChildren();
                out[i] = null;
                bad[0] = true;
            }
        }
        return out;
    }

    private Object value(JsonParser p, JsonToken t, DataType type, boolean[] bad)
            throws IOException, WrongType {
        if (t == JsonToken.VALUE_NULL) {
            return null;
        }
        if (type instanceof StringType) {
            if (t == JsonToken.VALUE_STRING) {
                return p.getText();
            }
            if (t == JsonToken.START_OBJECT || t == JsonToken.START_ARRAY) {
                throw new WrongType();
            }
            return p.getText();  // from_json keeps a scalar's text in a string field
        }
        if (type instanceof DoubleType) {
            if (t == JsonToken.VALUE_NUMBER_FLOAT || t == JsonToken.VALUE_NUMBER_INT) {
                return p.getDoubleValue();
            }
            if (t == JsonToken.VALUE_STRING) {
                switch (p.getText()) {
                    case "NaN": return Double.NaN;
                    case "Infinity": case "+INF": case "Inf": return Double.POSITIVE_INFINITY;
                    case "-Infinity": case "-INF": case "-Inf": return Double.NEGATIVE_INFINITY;
                    default: throw new WrongType();
                }
            }
            throw new WrongType();
        }
        if (type instanceof LongType) {
            if (t == JsonToken.VALUE_NUMBER_INT
                    && p.getNumberType() != JsonParser.NumberType.BIG_INTEGER) {
                return p.getLongValue();
            }
            throw new WrongType();
        }
        if (type instanceof BooleanType) {
            if (t == JsonToken.VALUE_TRUE || t == JsonToken.VALUE_FALSE) {
                return t == JsonToken.VALUE_TRUE;
            }
            throw new WrongType();
        }
        if (type instanceof TimestampType) {
            if (t != JsonToken.VALUE_STRING) {
                throw new WrongType();
            }
            try {
                return Timestamp.from(OffsetDateTime.parse(p.getText()).toInstant());
            } catch (RuntimeException e) {
                throw new WrongType();
            }
        }
        if (type instanceof ArrayType) {
            if (t != JsonToken.START_ARRAY) {
                throw new WrongType();
            }
            DataType item = ((ArrayType) type).elementType();
            ArrayList<Object> items = new ArrayList<>();
            JsonToken next;
            while ((next = p.nextToken()) != JsonToken.END_ARRAY) {
                items.add(value(p, next, item, bad));
            }
            return items.toArray();
        }
        if (type instanceof StructType) {
            if (t != JsonToken.START_OBJECT) {
                throw new WrongType();
            }
            return RowFactory.create(struct(p, (StructType) type, bad));
        }
        throw new WrongType();
    }
}
