"""Two of TF Serving's config messages that the tensorflow-serving-api wheel does not ship.

`BatchingParameters` (tensorflow_serving/servables/tensorflow/session_bundle_config.proto, what
--batching_parameters_file holds) and `MonitoringConfig` (tensorflow_serving/config/
monitoring_config.proto, what --monitoring_config_file holds), declared here with TF Serving's
package, field names and numbers, so the same text-format files parse for both servers.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(name: str, number: int, kind: int, type_name: str = "", repeated: bool = False) -> _F:
    field = _F(name=name, number=number, type=kind, label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    if type_name:
        field.type_name = type_name
    return field


def _build():
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    file = descriptor_pb2.FileDescriptorProto(name="sidrec/tf_serving_config_messages.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=["google/protobuf/wrappers.proto"])
    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    file.message_type.add(name="BatchingParameters", field=[
        _field("max_batch_size", 1, _F.TYPE_MESSAGE, int64_value),
        _field("batch_timeout_micros", 2, _F.TYPE_MESSAGE, int64_value),
        _field("max_enqueued_batches", 3, _F.TYPE_MESSAGE, int64_value),
        _field("num_batch_threads", 4, _F.TYPE_MESSAGE, int64_value),
        _field("thread_pool_name", 5, _F.TYPE_MESSAGE, string_value),
        _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
        _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL)])
    file.message_type.add(name="PrometheusConfig", field=[_field("enable", 1, _F.TYPE_BOOL),
                                                          _field("path", 2, _F.TYPE_STRING)])
    file.message_type.add(name="MonitoringConfig", field=[
        _field("prometheus_config", 1, _F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")])
    pool.Add(file)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{name}"))
                 for name in ("BatchingParameters", "MonitoringConfig"))


BatchingParametersProto, MonitoringConfig = _build()
