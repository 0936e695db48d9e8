import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InitializeRequest(_message.Message):
    __slots__ = ("config_data", "verify_connection")
    CONFIG_DATA_FIELD_NUMBER: _ClassVar[int]
    VERIFY_CONNECTION_FIELD_NUMBER: _ClassVar[int]
    config_data: _struct_pb2.Struct
    verify_connection: bool
    def __init__(self, config_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., verify_connection: _Optional[bool] = ...) -> None: ...

class InitializeResponse(_message.Message):
    __slots__ = ("config_data",)
    CONFIG_DATA_FIELD_NUMBER: _ClassVar[int]
    config_data: _struct_pb2.Struct
    def __init__(self, config_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class NewUserRequest(_message.Message):
    __slots__ = ("username_config", "password", "expiration", "statements", "rollback_statements", "credential_type", "public_key", "subject")
    USERNAME_CONFIG_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    username_config: UsernameConfig
    password: str
    expiration: _timestamp_pb2.Timestamp
    statements: Statements
    rollback_statements: Statements
    credential_type: int
    public_key: bytes
    subject: str
    def __init__(self, username_config: _Optional[_Union[UsernameConfig, _Mapping]] = ..., password: _Optional[str] = ..., expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statements: _Optional[_Union[Statements, _Mapping]] = ..., rollback_statements: _Optional[_Union[Statements, _Mapping]] = ..., credential_type: _Optional[int] = ..., public_key: _Optional[bytes] = ..., subject: _Optional[str] = ...) -> None: ...

class UsernameConfig(_message.Message):
    __slots__ = ("display_name", "role_name")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_NAME_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    role_name: str
    def __init__(self, display_name: _Optional[str] = ..., role_name: _Optional[str] = ...) -> None: ...

class NewUserResponse(_message.Message):
    __slots__ = ("username",)
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    username: str
    def __init__(self, username: _Optional[str] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("username", "password", "expiration", "public_key", "credential_type")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    CREDENTIAL_TYPE_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: ChangePassword
    expiration: ChangeExpiration
    public_key: ChangePublicKey
    credential_type: int
    def __init__(self, username: _Optional[str] = ..., password: _Optional[_Union[ChangePassword, _Mapping]] = ..., expiration: _Optional[_Union[ChangeExpiration, _Mapping]] = ..., public_key: _Optional[_Union[ChangePublicKey, _Mapping]] = ..., credential_type: _Optional[int] = ...) -> None: ...

class ChangePassword(_message.Message):
    __slots__ = ("new_password", "statements")
    NEW_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    new_password: str
    statements: Statements
    def __init__(self, new_password: _Optional[str] = ..., statements: _Optional[_Union[Statements, _Mapping]] = ...) -> None: ...

class ChangePublicKey(_message.Message):
    __slots__ = ("new_public_key", "statements")
    NEW_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    new_public_key: bytes
    statements: Statements
    def __init__(self, new_public_key: _Optional[bytes] = ..., statements: _Optional[_Union[Statements, _Mapping]] = ...) -> None: ...

class ChangeExpiration(_message.Message):
    __slots__ = ("new_expiration", "statements")
    NEW_EXPIRATION_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    new_expiration: _timestamp_pb2.Timestamp
    statements: Statements
    def __init__(self, new_expiration: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., statements: _Optional[_Union[Statements, _Mapping]] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("username", "statements")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    username: str
    statements: Statements
    def __init__(self, username: _Optional[str] = ..., statements: _Optional[_Union[Statements, _Mapping]] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeResponse(_message.Message):
    __slots__ = ("Type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    Type: str
    def __init__(self, Type: _Optional[str] = ...) -> None: ...

class Statements(_message.Message):
    __slots__ = ("Commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    Commands: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, Commands: _Optional[_Iterable[str]] = ...) -> None: ...

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
